"""The sandbox's bounds-only HPA controller, against the emulator over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.hpa import HPA_USER, HpaController, bounded, rbac_objects
from sandbox.kubeapi import ADMIN_USER, KubeAPIServer
from sandbox.procs import wait_until
from sandbox.world import AppSpec, app_deployment, hpa_manifest

NS, NAME = "aegisops", "aegisops-app"
SCALE_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale"
HPA_TOKEN = "hpa-token"
STAMP = "2026-11-26T12:00:00Z"


def _clock() -> datetime:
    return datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def _limited(reason: str, message: str, status: str = "True") -> dict[str, str]:
    return {
        "type": "ScalingLimited",
        "status": status,
        "lastTransitionTime": STAMP,
        "reason": reason,
        "message": message,
    }


@pytest.fixture
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(tls=True, tokens={HPA_TOKEN: HPA_USER}, rbac_files=[]) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        for obj in rbac_objects():  # RBAC on: the controller's own ClusterRole must suffice
            server.create(obj)
        server.create(app_deployment(spec=AppSpec(replicas=1)))
        yield server


@pytest.fixture
def controller(api: KubeAPIServer, tmp_path: Path) -> Iterator[HpaController]:
    kubeconfig = api.write_kubeconfig(tmp_path / "hpa.kubeconfig", token=HPA_TOKEN)
    with k8s_config.new_client_from_config(config_file=str(kubeconfig)) as client:
        yield HpaController(api_client=client, clock=_clock)


def _replicas(api: KubeAPIServer) -> int:
    return int(api.get("deployments", NS, NAME)["spec"]["replicas"])


def test_scale_above_max_is_clamped_to_max_by_the_hpa_user(
    api: KubeAPIServer, controller: HpaController
) -> None:
    api.create(hpa_manifest(min_replicas=2, max_replicas=4))
    api.patch("deployments", NS, NAME, {"spec": {"replicas": 7}})  # someone scales past max
    api.clear_requests()
    controller.sync_once()
    assert _replicas(api) == 4
    [patch] = api.requests(verb="patch", subresource="scale")
    assert (patch.path, patch.user, patch.code, patch.body) == (
        SCALE_PATH,
        HPA_USER,
        200,
        {"spec": {"replicas": 4}},
    )
    assert api.get("horizontalpodautoscalers", NS, NAME)["status"] == {
        "currentReplicas": 7,
        "desiredReplicas": 4,
        "lastScaleTime": STAMP,
        "conditions": [
            _limited(
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        ],
    }
    api.clear_requests()
    controller.sync_once()  # within bounds now: reads, writes only the status
    assert api.requests(verb="patch", subresource="scale") == []
    hpa = api.get("horizontalpodautoscalers", NS, NAME)["status"]
    assert (hpa["currentReplicas"], hpa["desiredReplicas"]) == (4, 4)
    assert hpa["conditions"] == [
        _limited("DesiredWithinRange", "the desired count is within the acceptable range", "False")
    ]


def test_scale_below_min_is_raised_to_min_default_min_is_one(
    api: KubeAPIServer, controller: HpaController
) -> None:
    api.create(hpa_manifest(min_replicas=3, max_replicas=5))
    controller.sync_once()
    assert _replicas(api) == 3
    [patch] = api.requests(verb="patch", subresource="scale")
    assert (patch.user, patch.body) == (HPA_USER, {"spec": {"replicas": 3}})
    assert api.get("horizontalpodautoscalers", NS, NAME)["status"]["conditions"] == [
        _limited(
            "TooFewReplicas", "the desired replica count is less than the minimum replica count"
        )
    ]


def test_running_controller_undoes_a_manual_scale_within_its_interval(
    api: KubeAPIServer, controller: HpaController, tmp_path: Path
) -> None:
    api.create(hpa_manifest(min_replicas=None, max_replicas=2))
    admin_config = api.write_kubeconfig(tmp_path / "admin.kubeconfig")
    with controller, k8s_config.new_client_from_config(config_file=str(admin_config)) as admin:
        k8s.AppsV1Api(admin).patch_namespaced_deployment_scale(
            NAME, NS, {"spec": {"replicas": 6}}, _content_type="application/merge-patch+json"
        )
        wait_until(lambda: _replicas(api) == 2, timeout=10, message="clamped back to 2")
    writes = [(e.user, e.body) for e in api.requests(verb="patch", subresource="scale")]
    assert writes == [
        (ADMIN_USER, {"spec": {"replicas": 6}}),
        (HPA_USER, {"spec": {"replicas": 2}}),
    ]


def test_zero_replicas_and_other_targets_are_left_alone(
    api: KubeAPIServer, controller: HpaController
) -> None:
    api.create(hpa_manifest(min_replicas=2, max_replicas=3, kind="StatefulSet"))
    controller.sync_once()
    assert _replicas(api) == 1
    api.delete("horizontalpodautoscalers", NS, NAME)
    api.create(hpa_manifest(min_replicas=2, max_replicas=3))
    api.patch("deployments", NS, NAME, {"spec": {"replicas": 0}})
    controller.sync_once()  # kube: scaling is disabled while the target is at 0
    assert _replicas(api) == 0
    assert api.requests(verb="patch", subresource="scale") == []


def test_bounded() -> None:
    assert bounded(replicas=5, minimum=1, maximum=3) == (3, "TooManyReplicas")
    assert bounded(replicas=1, minimum=2, maximum=3) == (2, "TooFewReplicas")
    assert bounded(replicas=2, minimum=2, maximum=3) == (2, None)
    assert bounded(replicas=0, minimum=2, maximum=3) == (0, None)
