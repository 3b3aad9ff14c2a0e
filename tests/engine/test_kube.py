"""aegisops.kube against the Kubernetes API emulator over HTTPS, with the official client.

The emulator runs in RBAC mode with the project's kubernetes/rbac.yaml, and the client
authenticates as the engine's service account (in-cluster files or a kubeconfig).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aegisops.config import KubernetesConfig
from aegisops.kube import (
    Conflict,
    Forbidden,
    KubeAuthError,
    KubeClient,
    KubeUnavailable,
    NotFound,
)
from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import free_port

RBAC = Path(__file__).resolve().parents[2] / "kubernetes" / "rbac.yaml"
TOKEN = "engine-sa-token"
ENGINE_USER = "system:serviceaccount:aegisops:aegisops-engine"
NS, APP = "aegisops", "web"
MERGE = "application/merge-patch+json"


def deployment(name: str, *, namespace: str = NS, replicas: int = 1) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "example/app:1.0"}]},
            },
        },
    }


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(tls=True, rbac_files=[RBAC], tokens={TOKEN: ENGINE_USER}) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield server


@pytest.fixture
def app(api: KubeAPIServer) -> Iterator[str]:
    """A fresh Deployment per test (1 replica), deleted afterwards; the request log cleared."""
    api.create(deployment(APP))
    api.clear_requests()
    yield APP
    api.clear_faults()
    api.delete("deployments", NS, APP)


def settings(
    *, mode: str = "auto", sa_dir: Path, kubeconfig: Path | None = None, timeout: float = 5.0
) -> KubernetesConfig:
    return KubernetesConfig(
        mode=mode,
        kubeconfig=str(kubeconfig) if kubeconfig else None,
        serviceaccount_dir=str(sa_dir),
        timeout_seconds=timeout,
    )


@pytest.fixture
def incluster(api: KubeAPIServer, tmp_path: Path) -> Iterator[KubeClient]:
    """The engine's client as in a pod: service-account files + KUBERNETES_SERVICE_*."""
    env = api.incluster_files(tmp_path / "sa", token=TOKEN)
    with KubeClient(config=settings(sa_dir=tmp_path / "sa"), environ=env) as kube:
        yield kube


def test_incluster_auth_comes_first_and_identifies_the_service_account(
    api: KubeAPIServer, app: str, tmp_path: Path
) -> None:
    env = api.incluster_files(tmp_path / "sa", token=TOKEN)
    admin = api.write_kubeconfig(tmp_path / "admin.kubeconfig")  # present, but not used
    config = settings(sa_dir=tmp_path / "sa", kubeconfig=admin)
    with KubeClient(config=config, environ=env) as kube:
        assert kube.auth.mode == "incluster"
        assert kube.get_scale(namespace=NS, name=app).replicas == 1
    [entry] = api.requests(subresource="scale")
    assert (entry.verb, entry.user, entry.code) == ("get", ENGINE_USER, 200)


def test_kubeconfig_is_the_fallback_without_incluster_env(
    api: KubeAPIServer, app: str, tmp_path: Path
) -> None:
    path = api.write_kubeconfig(tmp_path / "engine.kubeconfig", token=TOKEN)
    config = settings(sa_dir=tmp_path / "missing")
    with KubeClient(config=config, environ={"KUBECONFIG": str(path)}) as kube:
        assert kube.auth.mode == "kubeconfig"
        info = kube.get_deployment(namespace=NS, name=app)
    assert info.replicas == 1
    assert info.resource_version
    assert [(e.verb, e.user) for e in api.requests(name=app)] == [("get", ENGINE_USER)]


def test_no_credentials_is_one_clear_error(tmp_path: Path) -> None:
    config = settings(mode="incluster", sa_dir=tmp_path)
    with pytest.raises(KubeAuthError, match="in-cluster credentials unusable: Service host/port"):
        KubeClient(config=config, environ={})
    config = settings(sa_dir=tmp_path, kubeconfig=tmp_path / "nope")
    with pytest.raises(
        KubeAuthError, match=r"no Kubernetes credentials \(in-cluster: .*kubeconfig"
    ):
        KubeClient(config=config, environ={})


def test_patch_scale_sends_exactly_the_replicas(
    api: KubeAPIServer, app: str, incluster: KubeClient
) -> None:
    after = incluster.patch_scale(namespace=NS, name=app, replicas=3)
    assert after.replicas == 3
    [entry] = api.requests(verb="patch")
    assert entry.path == f"/apis/apps/v1/namespaces/{NS}/deployments/{app}/scale"
    assert entry.content_type == MERGE
    assert entry.body == {"spec": {"replicas": 3}}
    assert entry.code == 200
    assert api.get("deployments", NS, app)["spec"]["replicas"] == 3


def test_patch_annotations_with_the_resource_version_precondition(
    api: KubeAPIServer, app: str, incluster: KubeClient
) -> None:
    before = incluster.get_deployment(namespace=NS, name=app)
    notes = {"aegisops.dev/last-action": "scale_up 1->2", "aegisops.dev/cooldown-until": None}
    after = incluster.patch_annotations(
        namespace=NS, name=app, annotations=notes, resource_version=before.resource_version
    )
    assert after.annotations == {"aegisops.dev/last-action": "scale_up 1->2"}
    assert after.resource_version != before.resource_version
    [entry] = api.requests(verb="patch")
    assert entry.path == f"/apis/apps/v1/namespaces/{NS}/deployments/{app}"
    assert entry.content_type == MERGE
    assert entry.body == {
        "metadata": {
            "resourceVersion": before.resource_version,
            "annotations": {
                "aegisops.dev/last-action": "scale_up 1->2",
                "aegisops.dev/cooldown-until": None,
            },
        }
    }
    # The same (now stale) version again: 409 -> Conflict, nothing written.
    stale = {"aegisops.dev/last-action": "scale_up 2->3"}
    with pytest.raises(Conflict, match=rf"patch deployments {NS}/{app}: 409 Conflict"):
        incluster.patch_annotations(
            namespace=NS, name=app, annotations=stale, resource_version=before.resource_version
        )
    current = api.get("deployments", NS, app)["metadata"]["annotations"]
    assert current == {"aegisops.dev/last-action": "scale_up 1->2"}


def test_missing_deployment_is_not_found(api: KubeAPIServer, incluster: KubeClient) -> None:
    with pytest.raises(NotFound, match=f"get deployments/scale {NS}/ghost: 404 NotFound"):
        incluster.get_scale(namespace=NS, name="ghost")


def test_outside_the_role_is_forbidden(api: KubeAPIServer, incluster: KubeClient) -> None:
    api.create(deployment("other", namespace="default"))
    try:
        with pytest.raises(Forbidden, match="patch deployments/scale default/other: 403 Forbidden"):
            incluster.patch_scale(namespace="default", name="other", replicas=2)
        assert api.get("deployments", "default", "other")["spec"]["replicas"] == 1
    finally:
        api.delete("deployments", "default", "other")


@pytest.mark.parametrize("status", [503, 429])
def test_no_hidden_retry_on_retry_after(
    api: KubeAPIServer, app: str, incluster: KubeClient, status: int
) -> None:
    """urllib3 would silently retry a GET answered 503/429 with Retry-After: not here."""
    api.inject(verb="get", path=f"/deployments/{app}/scale$", status=status, times=1, retry_after=1)
    with pytest.raises(KubeUnavailable, match=f"get deployments/scale {NS}/{app}: {status}"):
        incluster.get_scale(namespace=NS, name=app)
    assert [e.code for e in api.requests(subresource="scale")] == [status]
    # The fault fired once; the next pass's call simply works.
    assert incluster.get_scale(namespace=NS, name=app).replicas == 1


def test_every_call_has_a_timeout(api: KubeAPIServer, app: str, tmp_path: Path) -> None:
    env = api.incluster_files(tmp_path / "sa", token=TOKEN)
    api.inject(verb="get", path=f"/deployments/{app}$", latency=3.0, times=1)
    config = settings(sa_dir=tmp_path / "sa", timeout=0.5)
    with KubeClient(config=config, environ=env) as kube:
        began = time.monotonic()
        with pytest.raises(KubeUnavailable, match="API server unreachable"):
            kube.get_deployment(namespace=NS, name=app)
        assert time.monotonic() - began < 2.5


def test_unreachable_server_is_unavailable(tmp_path: Path, api: KubeAPIServer) -> None:
    env = api.incluster_files(tmp_path / "sa", token=TOKEN)
    env["KUBERNETES_SERVICE_PORT"] = str(free_port())
    expected = f"get deployments {NS}/x: API server"
    with (
        KubeClient(config=settings(sa_dir=tmp_path / "sa"), environ=env) as kube,
        pytest.raises(KubeUnavailable, match=expected),
    ):
        kube.get_deployment(namespace=NS, name="x")


def test_hpa_targets_lists_autoscaled_deployments(
    api: KubeAPIServer, incluster: KubeClient
) -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web-hpa", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 4,
        },
    }
    assert incluster.hpa_targets(namespace=NS) == set()
    api.create(hpa)
    try:
        assert incluster.hpa_targets(namespace=NS) == {"web"}
    finally:
        api.delete("horizontalpodautoscalers.autoscaling", NS, "web-hpa")
    [first, second] = api.requests(resource="horizontalpodautoscalers")
    assert (first.verb, first.code, second.code) == ("list", 200, 200)


def test_can_i_reflects_the_role(api: KubeAPIServer, incluster: KubeClient) -> None:
    def can(verb: str, group: str, resource: str, subresource: str = "") -> bool:
        return incluster.can_i(
            verb=verb, group=group, resource=resource, subresource=subresource, namespace=NS
        )

    assert can("patch", "apps", "deployments", "scale")
    assert can("get", "apps", "deployments")
    assert can("list", "autoscaling", "horizontalpodautoscalers")
    assert not can("delete", "apps", "deployments")
    assert not can("update", "apps", "deployments", "scale")
