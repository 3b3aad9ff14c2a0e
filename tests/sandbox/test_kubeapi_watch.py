"""Watch: resume from a resourceVersion, timeoutSeconds, 410 Expired for a too-old version."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from sandbox.kubeapi import KubeAPIServer

NS = "aegisops"
Manifest = Callable[..., dict[str, Any]]
ClientFactory = Callable[..., k8s.ApiClient]


def test_watch_resumes_from_a_resource_version(
    kubeapi: KubeAPIServer, admin: k8s.ApiClient, make_deployment: Manifest
) -> None:
    apps = k8s.AppsV1Api(admin)
    apps.create_namespaced_deployment(NS, make_deployment("web"))
    start = apps.list_namespaced_deployment(NS).metadata.resource_version
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    apps.create_namespaced_deployment(NS, make_deployment("api"))
    apps.delete_namespaced_deployment("api", NS)
    kubeapi.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": NS}}
    )

    seen = [
        (event["type"], event["object"].metadata.name, event["object"].spec.replicas)
        for event in watch.Watch().stream(
            apps.list_namespaced_deployment, NS, resource_version=start, timeout_seconds=1
        )
    ]
    assert seen == [("MODIFIED", "web", 2), ("ADDED", "api", 1), ("DELETED", "api", 1)]


def test_watch_without_version_starts_with_the_current_objects_then_streams(
    kubeapi: KubeAPIServer, admin: k8s.ApiClient, make_deployment: Manifest
) -> None:
    apps = k8s.AppsV1Api(admin)
    apps.create_namespaced_deployment(NS, make_deployment("web"))
    stream = watch.Watch()
    events: list[tuple[str, str, int]] = []
    got_initial = threading.Event()

    def consume() -> None:
        for event in stream.stream(apps.list_namespaced_deployment, NS, timeout_seconds=5):
            events.append(
                (event["type"], event["object"].metadata.name, event["object"].spec.replicas)
            )
            got_initial.set()
            if len(events) == 2:
                stream.stop()

    reader = threading.Thread(target=consume)
    reader.start()
    assert got_initial.wait(timeout=5)
    kubeapi.patch("deployments", NS, "web", {"spec": {"replicas": 4}})
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert events == [("ADDED", "web", 1), ("MODIFIED", "web", 4)]


def test_too_old_resource_version_is_410_expired(
    client_for: ClientFactory, make_deployment: Manifest
) -> None:
    with KubeAPIServer(tls=False, watch_history=3) as api:
        apps = k8s.AppsV1Api(client_for(api))
        apps.create_namespaced_deployment("default", make_deployment("web", namespace="default"))
        first = apps.list_namespaced_deployment("default").metadata.resource_version
        for replicas in (2, 3, 4, 5):
            apps.patch_namespaced_deployment_scale(
                "web", "default", {"spec": {"replicas": replicas}}
            )
        with pytest.raises(ApiException) as expired:
            list(
                watch.Watch().stream(
                    apps.list_namespaced_deployment,
                    "default",
                    resource_version=first,
                    timeout_seconds=1,
                )
            )
        assert expired.value.status == 410
        assert expired.value.reason.startswith("Expired: too old resource version: ")

        raw = k8s.AppsV1Api(client_for(api)).list_namespaced_deployment(
            "default", watch=True, resource_version=first, _preload_content=False
        )
        lines = raw.data.decode().splitlines()
        assert len(lines) == 1
        assert '"type": "ERROR"' in lines[0] and '"code": 410' in lines[0]
        assert '"reason": "Expired"' in lines[0]


def test_watch_filters_by_label_selector_and_namespace(
    kubeapi: KubeAPIServer, admin: k8s.ApiClient, make_deployment: Manifest
) -> None:
    apps = k8s.AppsV1Api(admin)
    start = kubeapi.store.resource_version
    apps.create_namespaced_deployment(NS, make_deployment("web", labels={"app": "web"}))
    apps.create_namespaced_deployment(NS, make_deployment("db", labels={"app": "db"}))
    apps.create_namespaced_deployment("default", make_deployment("web", namespace="default"))
    names = [
        (event["object"].metadata.namespace, event["object"].metadata.name)
        for event in watch.Watch().stream(
            apps.list_namespaced_deployment,
            NS,
            label_selector="app=web",
            resource_version=str(start),
            timeout_seconds=1,
        )
    ]
    assert names == [(NS, "web")]


def test_selector_watch_sees_objects_enter_and_leave_like_kube(
    kubeapi: KubeAPIServer, admin: k8s.ApiClient, make_deployment: Manifest
) -> None:
    """kube's cacheWatcher: starts matching -> ADDED, stops matching -> DELETED (the
    previous content at the new resourceVersion), changes outside the selector -> nothing."""
    apps = k8s.AppsV1Api(admin)
    start = kubeapi.store.resource_version

    def label(tier: str | None) -> Any:
        return apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"tier": tier}}})

    apps.create_namespaced_deployment(NS, make_deployment("web"))  # not matching yet
    label("front")
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    left = label("back")
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}})  # outside
    apps.delete_namespaced_deployment("web", NS)  # outside: no event

    seen = [
        (
            event["type"],
            event["object"].metadata.labels.get("tier"),
            event["object"].spec.replicas,
            event["object"].metadata.resource_version,
        )
        for event in watch.Watch().stream(
            apps.list_namespaced_deployment,
            NS,
            label_selector="tier=front",
            resource_version=str(start),
            timeout_seconds=1,
        )
    ]
    assert [s[:3] for s in seen] == [
        ("ADDED", "front", 1),
        ("MODIFIED", "front", 2),
        ("DELETED", "front", 2),
    ]
    assert seen[-1][3] == left.metadata.resource_version
