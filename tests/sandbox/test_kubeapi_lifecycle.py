"""stop() ends every thread and frees the port, even with open watches and keep-alive
connections; concurrent writers get distinct resourceVersions and lose no update."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sandbox.kubeapi import KubeAPIServer

ClientFactory = Callable[..., k8s.ApiClient]


def test_stop_joins_threads_and_frees_the_port(
    client_for: ClientFactory, make_deployment: Any
) -> None:
    threads_before = set(threading.enumerate())
    api = KubeAPIServer(tls=True).start()
    apps = k8s.AppsV1Api(client_for(api))
    apps.create_namespaced_deployment("default", make_deployment("web", namespace="default"))
    watch_open = threading.Event()
    outcome: list[str] = []

    def long_watch() -> None:
        response = apps.list_namespaced_deployment(
            "default", watch=True, timeout_seconds=600, _preload_content=False
        )
        watch_open.set()
        try:
            outcome.append(response.read().decode())  # returns once the server goes away
        except Exception as exc:  # the connection may be cut mid-stream
            outcome.append(type(exc).__name__)
        finally:
            response.release_conn()

    watcher = threading.Thread(target=long_watch)
    watcher.start()
    assert watch_open.wait(timeout=5)
    port = api.port
    api.stop()
    watcher.join(timeout=10)
    assert not watcher.is_alive()
    assert len(outcome) == 1
    leftover = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert leftover == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(RuntimeError, match="the emulator is not running"):
        _ = api.url


def test_concurrent_scale_patches_are_serialised(
    kubeapi: KubeAPIServer, client_for: ClientFactory, make_deployment: Any
) -> None:
    kubeapi.create(make_deployment("web", replicas=0))
    start_rv = int(kubeapi.get("deployments", "aegisops", "web")["metadata"]["resourceVersion"])
    errors: list[ApiException] = []

    clients = [k8s.AppsV1Api(client_for(kubeapi)) for _ in range(16)]

    def add_one_annotation(index: int) -> None:
        apps = clients[index]
        try:
            apps.patch_namespaced_deployment(
                "web", "aegisops", {"metadata": {"annotations": {f"n{index}": "x"}}}
            )
        except ApiException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=add_one_annotation, args=(i,)) for i in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=20)
    assert errors == []
    final = kubeapi.get("deployments", "aegisops", "web")
    assert sorted(final["metadata"]["annotations"]) == sorted(f"n{i}" for i in range(16))
    assert int(final["metadata"]["resourceVersion"]) == start_rv + 16
