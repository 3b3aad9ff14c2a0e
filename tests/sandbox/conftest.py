"""Fixtures for the Kubernetes API emulator's own tests (tests/sandbox/test_kubeapi*.py)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.kubeapi import KubeAPIServer

ENGINE_TOKEN = "engine-token"
ENGINE_USER = "system:serviceaccount:aegisops:aegisops-engine"
NS = "aegisops"


def deployment_manifest(
    name: str,
    *,
    namespace: str = NS,
    replicas: int | None = 1,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A minimal valid apps/v1 Deployment."""
    labels = labels or {"app": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(labels)},
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": {"containers": [{"name": "app", "image": "example/app:1.0"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": spec,
    }


@pytest.fixture
def make_deployment() -> Callable[..., dict[str, Any]]:
    """make_deployment(name, namespace=..., replicas=..., labels=...) -> manifest dict."""
    return deployment_manifest


@pytest.fixture
def kubeapi() -> Iterator[KubeAPIServer]:
    """An HTTPS emulator (RBAC off) with the `aegisops` namespace and the engine's token."""
    with KubeAPIServer(tls=True, tokens={ENGINE_TOKEN: ENGINE_USER}) as api:
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield api


ClientFactory = Callable[..., k8s.ApiClient]


@pytest.fixture
def client_for(tmp_path: Path) -> Iterator[ClientFactory]:
    """client_for(api, token=None) -> an official ApiClient built from a written kubeconfig."""
    made: list[k8s.ApiClient] = []

    def make(api: KubeAPIServer, token: str | None = None) -> k8s.ApiClient:
        path = api.write_kubeconfig(tmp_path / f"kubeconfig-{len(made)}", token=token)
        made.append(k8s_config.new_client_from_config(config_file=str(path)))
        return made[-1]

    yield make
    for api_client in made:
        api_client.close()


@pytest.fixture
def admin(kubeapi: KubeAPIServer, client_for: ClientFactory) -> k8s.ApiClient:
    return client_for(kubeapi)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def kubectl_for(tmp_path: Path) -> Callable[[KubeAPIServer], Kubectl]:
    """kubectl_for(api)(*args, check=True) runs the real kubectl with an admin kubeconfig."""
    home = tmp_path / "kubectl-home"
    home.mkdir()

    def bind(api: KubeAPIServer) -> Kubectl:
        config = api.write_kubeconfig(home / f"config-{api.port}")

        def run(
            *args: str, check: bool = True, timeout: float = 30
        ) -> subprocess.CompletedProcess[str]:
            env = {"PATH": os.environ["PATH"], "HOME": str(home)}
            done = subprocess.run(
                ["kubectl", "--kubeconfig", str(config), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
            )
            if check and done.returncode != 0:
                raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
            return done

        return run

    return bind


@pytest.fixture
def kubectl(kubeapi: KubeAPIServer, kubectl_for: Callable[[KubeAPIServer], Kubectl]) -> Kubectl:
    return kubectl_for(kubeapi)
