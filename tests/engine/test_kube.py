"""aegisops.kube against the Kubernetes API emulator over HTTPS, with the official client.

The emulator runs in RBAC mode with the project's kubernetes/rbac.yaml (plus the opt-in
examples for raise_min and discovery, which the calls they cover need), and the client
authenticates as the engine's service account (in-cluster files or a kubeconfig).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_fakes import ENGINE_USER, MANIFESTS, NS, RBAC, TOKEN, api_server, in_pod, settings

from aegisops.kube import (
    Conflict,
    Forbidden,
    KubeAuthError,
    KubeClient,
    KubeUnavailable,
    LeaseInfo,
    NotFound,
)
from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import free_port
from sandbox.world import hpa_manifest

EXAMPLES = [
    MANIFESTS / "examples" / "rbac-hpa-raise-min.yaml",
    MANIFESTS / "examples" / "rbac-discovery.yaml",
]
APP = "web"
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
    with api_server([RBAC, *EXAMPLES]) as server:
        yield server


@pytest.fixture(scope="module")
def bare_api() -> Iterator[KubeAPIServer]:
    """kubernetes/rbac.yaml alone: what the engine may do without the opt-in examples."""
    with api_server([RBAC]) as server:
        yield server


@pytest.fixture
def app(api: KubeAPIServer) -> Iterator[str]:
    """A fresh Deployment per test (1 replica), deleted afterwards; the request log cleared."""
    api.create(deployment(APP))
    api.clear_requests()
    yield APP
    api.clear_faults()
    api.delete("deployments", NS, APP)


@pytest.fixture
def incluster(api: KubeAPIServer, tmp_path: Path) -> Iterator[KubeClient]:
    with in_pod(api, tmp_path / "sa") as kube:
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


@pytest.fixture
def bare(bare_api: KubeAPIServer, tmp_path: Path) -> Iterator[KubeClient]:
    with in_pod(bare_api, tmp_path / "bare-sa") as kube:
        yield kube


# -- Deployments: facts, discovery, restart --------------------------------------------


def test_deployment_info_has_labels_ready_replicas_and_generation(
    api: KubeAPIServer, app: str, incluster: KubeClient
) -> None:
    info = incluster.get_deployment(namespace=NS, name=app)
    assert (dict(info.labels), info.ready_replicas, info.generation) == ({"app": app}, 0, 1)
    api.patch("deployments", NS, app, {"status": {"replicas": 1, "readyReplicas": 1}})
    assert incluster.get_deployment(namespace=NS, name=app).ready_replicas == 1


def test_list_deployments_by_label_selector(
    api: KubeAPIServer, app: str, incluster: KubeClient
) -> None:
    opted = deployment("opted")
    opted["metadata"]["labels"]["aegisops.dev/enabled"] = "true"
    api.create(opted)
    try:
        found = incluster.list_deployments(namespace=NS, label_selector="aegisops.dev/enabled=true")
    finally:
        api.delete("deployments", NS, "opted")
    assert list(found) == ["opted"]
    assert found["opted"].labels == {"app": "opted", "aegisops.dev/enabled": "true"}
    [entry] = api.requests(verb="list")
    assert entry.path == f"/apis/apps/v1/namespaces/{NS}/deployments"
    assert entry.query["labelSelector"] == "aegisops.dev/enabled=true"
    assert (entry.user, entry.code) == (ENGINE_USER, 200)


def test_restart_stamps_the_pod_template_like_kubectl_rollout_restart(
    api: KubeAPIServer, app: str, incluster: KubeClient
) -> None:
    at = "2026-11-26T12:00:00Z"
    info = incluster.restart(namespace=NS, name=app, at=at)
    assert info.generation == 2
    [entry] = api.requests(verb="patch")
    assert entry.path == f"/apis/apps/v1/namespaces/{NS}/deployments/{app}"
    assert entry.content_type == MERGE
    assert entry.body == {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": at}}}
        }
    }
    template = api.get("deployments", NS, app)["spec"]["template"]["metadata"]
    assert template["annotations"] == {"kubectl.kubernetes.io/restartedAt": at}


# -- HPAs -------------------------------------------------------------------------------


def test_hpas_are_keyed_by_target_with_the_api_default_min(
    api: KubeAPIServer, incluster: KubeClient
) -> None:
    api.create(
        hpa_manifest(name="web-hpa", target="web", min_replicas=None, max_replicas=4, namespace=NS)
    )
    api.create(
        hpa_manifest(name="api-hpa", target="api", min_replicas=2, max_replicas=4, namespace=NS)
    )
    api.create(
        hpa_manifest(
            name="set-hpa",
            target="db",
            kind="StatefulSet",
            min_replicas=1,
            max_replicas=4,
            namespace=NS,
        )
    )
    try:
        found = incluster.hpas(namespace=NS)
        targets = incluster.hpa_targets(namespace=NS)
    finally:
        for name in ("web-hpa", "api-hpa", "set-hpa"):
            api.delete("horizontalpodautoscalers.autoscaling", NS, name)
    assert sorted(found) == ["api", "web"] and targets == {"api", "web"}
    assert (found["web"].name, found["web"].min_replicas, found["web"].max_replicas) == (
        "web-hpa",
        1,
        4,
    )
    assert (found["api"].name, found["api"].min_replicas) == ("api-hpa", 2)
    assert found["api"].resource_version


def test_patch_hpa_min_sends_exactly_the_floor(api: KubeAPIServer, incluster: KubeClient) -> None:
    api.create(
        hpa_manifest(name="web-hpa", target="web", min_replicas=1, max_replicas=4, namespace=NS)
    )
    api.clear_requests()
    try:
        info = incluster.patch_hpa_min(namespace=NS, name="web-hpa", min_replicas=3)
        stored = api.get("horizontalpodautoscalers.autoscaling", NS, "web-hpa")["spec"]
    finally:
        api.delete("horizontalpodautoscalers.autoscaling", NS, "web-hpa")
    assert (info.name, info.min_replicas, info.max_replicas) == ("web-hpa", 3, 4)
    [entry] = api.requests(verb="patch")
    assert entry.path == f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/web-hpa"
    assert (entry.content_type, entry.body, entry.code) == (
        MERGE,
        {"spec": {"minReplicas": 3}},
        200,
    )
    assert (stored["minReplicas"], stored["maxReplicas"]) == (3, 4)


# -- Leases -----------------------------------------------------------------------------

LEASE = "aegisops-engine"
T0 = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def test_lease_create_get_replace_round_trip_with_microtime(
    api: KubeAPIServer, incluster: KubeClient
) -> None:
    with pytest.raises(NotFound, match=f"get leases {NS}/{LEASE}: 404 NotFound"):
        incluster.get_lease(namespace=NS, name=LEASE)
    mine = LeaseInfo(holder="a", duration_seconds=15, acquire_time=T0, renew_time=T0, transitions=0)
    try:
        created = incluster.create_lease(namespace=NS, name=LEASE, lease=mine)
        assert created == LeaseInfo(
            holder="a",
            duration_seconds=15,
            acquire_time=T0,
            renew_time=T0,
            transitions=0,
            resource_version=created.resource_version,
        )
        assert incluster.get_lease(namespace=NS, name=LEASE) == created
        later = T0 + dt.timedelta(seconds=5, microseconds=250)
        renew = LeaseInfo(
            holder="a",
            duration_seconds=15,
            acquire_time=T0,
            renew_time=later,
            transitions=0,
            resource_version=created.resource_version,
        )
        renewed = incluster.replace_lease(namespace=NS, name=LEASE, lease=renew)
        assert renewed.renew_time == later and renewed.acquire_time == T0
        assert renewed.resource_version != created.resource_version
    finally:
        api.delete("leases", NS, LEASE)
    [post] = api.requests(verb="create", resource="leases")
    assert post.path == f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
    assert post.body == {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": NS},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "leaseTransitions": 0,
            "acquireTime": "2026-11-26T12:00:00.000000Z",
            "renewTime": "2026-11-26T12:00:00.000000Z",
        },
    }
    [put] = api.requests(verb="update", resource="leases")
    assert put.path == f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{LEASE}"
    assert put.body["metadata"] == {
        "name": LEASE,
        "namespace": NS,
        "resourceVersion": created.resource_version,
    }
    assert put.body["spec"]["renewTime"] == "2026-11-26T12:00:05.000250Z"
    assert put.body["spec"]["acquireTime"] == "2026-11-26T12:00:00.000000Z"


def test_lease_races_are_conflicts(api: KubeAPIServer, incluster: KubeClient) -> None:
    mine = LeaseInfo(holder="a", duration_seconds=15, acquire_time=T0, renew_time=T0, transitions=0)
    try:
        first = incluster.create_lease(namespace=NS, name=LEASE, lease=mine)
        with pytest.raises(Conflict, match=f"create leases {NS}/{LEASE}: 409 AlreadyExists"):
            incluster.create_lease(namespace=NS, name=LEASE, lease=mine)
        taken = LeaseInfo(
            holder="b",
            duration_seconds=15,
            acquire_time=T0,
            renew_time=T0,
            transitions=1,
            resource_version=first.resource_version,
        )
        incluster.replace_lease(namespace=NS, name=LEASE, lease=taken)
        with pytest.raises(Conflict, match=f"update leases {NS}/{LEASE}: 409 Conflict"):
            incluster.replace_lease(namespace=NS, name=LEASE, lease=taken)  # stale now
        assert incluster.get_lease(namespace=NS, name=LEASE).holder == "b"
    finally:
        api.delete("leases", NS, LEASE)


# -- what failures carry --------------------------------------------------------------


def test_forbidden_names_the_missing_permission(bare_api: KubeAPIServer, bare: KubeClient) -> None:
    """Without the opt-in examples, discovery and raise_min are refused, and say why."""
    cases = [
        (
            lambda: bare.list_deployments(namespace=NS, label_selector="x=y"),
            "list deployments in apps, namespace aegisops",
        ),
        (
            lambda: bare.patch_hpa_min(namespace=NS, name="web-hpa", min_replicas=2),
            "patch horizontalpodautoscalers in autoscaling, namespace aegisops",
        ),
        (
            lambda: bare.get_lease(namespace=NS, name="someone-else"),
            "get leases in coordination.k8s.io, namespace aegisops",
        ),
        (
            lambda: bare.patch_scale(namespace="default", name="web", replicas=2),
            "patch deployments/scale in apps, namespace default",
        ),
    ]
    for call, permission in cases:
        with pytest.raises(Forbidden) as caught:
            call()
        assert caught.value.permission == permission
        assert str(caught.value).endswith(f" (missing permission: {permission})")
    assert [e.code for e in bare_api.requests(user=ENGINE_USER)] == [403] * len(cases)


@pytest.mark.parametrize(("status", "retry_after"), [(503, 7), (429, 2), (500, None)])
def test_unavailable_carries_retry_after(
    api: KubeAPIServer, app: str, incluster: KubeClient, status: int, retry_after: int | None
) -> None:
    api.inject(verb="patch", path=r"/scale$", status=status, times=1, retry_after=retry_after)
    with pytest.raises(KubeUnavailable) as caught:
        incluster.patch_scale(namespace=NS, name=app, replicas=2)
    assert caught.value.retry_after == (None if retry_after is None else float(retry_after))
    assert str(caught.value).startswith(f"patch deployments/scale {NS}/{app}: {status}")
