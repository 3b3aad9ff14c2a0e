"""Fault injection: errors, latency and dropped connections, N times, never changing state;
and the request log that records them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sandbox.kubeapi import KubeAPIServer

NS = "aegisops"
ENGINE = "system:serviceaccount:aegisops:aegisops-engine"
SCALE = r"/deployments/web/scale$"
ClientFactory = Callable[..., k8s.ApiClient]


def _merge_scale(apps: k8s.AppsV1Api, replicas: int) -> Any:
    return apps.patch_namespaced_deployment_scale(
        "web", NS, {"spec": {"replicas": replicas}}, _content_type="application/merge-patch+json"
    )


@pytest.fixture
def engine_apps(kubeapi: KubeAPIServer, client_for: ClientFactory, make_deployment: Any) -> Any:
    kubeapi.create(make_deployment("web"))
    return k8s.AppsV1Api(client_for(kubeapi, token="engine-token"))


def test_injected_403_has_the_rbac_shape_and_changes_nothing(
    kubeapi: KubeAPIServer, engine_apps: k8s.AppsV1Api
) -> None:
    before = kubeapi.get("deployments", NS, "web")
    kubeapi.inject(verb="patch", path=SCALE, status=403, user=ENGINE)
    with pytest.raises(ApiException) as denied:
        _merge_scale(engine_apps, 3)
    assert denied.value.status == 403
    assert json.loads(denied.value.body)["message"] == (
        f'deployments.apps "web" is forbidden: User "{ENGINE}" cannot patch resource'
        ' "deployments/scale" in API group "apps" in the namespace "aegisops"'
    )
    assert kubeapi.get("deployments", NS, "web") == before
    (entry,) = kubeapi.requests(verb="patch")
    assert (entry.code, entry.fault, entry.user) == (403, True, ENGINE)
    assert (entry.method, entry.path, entry.group, entry.resource, entry.subresource) == (
        "PATCH",
        f"/apis/apps/v1/namespaces/{NS}/deployments/web/scale",
        "apps",
        "deployments",
        "scale",
    )
    assert (entry.namespace, entry.name) == (NS, "web")
    assert (entry.content_type, entry.body) == (
        "application/merge-patch+json",
        {"spec": {"replicas": 3}},
    )
    assert _merge_scale(engine_apps, 3).spec.replicas == 3  # fired once only


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (409, "Conflict"),
        (429, "TooManyRequests"),
        (500, "InternalError"),
        (503, "ServiceUnavailable"),
    ],
)
def test_error_faults_fire_n_times_without_touching_state(
    kubeapi: KubeAPIServer, engine_apps: k8s.AppsV1Api, status: int, reason: str
) -> None:
    before = kubeapi.get("deployments", NS, "web")
    fault = kubeapi.inject(verb="patch", path=SCALE, status=status, times=2, retry_after=7)
    for _ in range(2):
        with pytest.raises(ApiException) as failed:
            _merge_scale(engine_apps, 4)
        assert failed.value.status == status
        assert json.loads(failed.value.body)["reason"] == reason
        assert failed.value.headers["Retry-After"] == "7"
        assert kubeapi.get("deployments", NS, "web") == before
    assert fault.fired == 2
    assert _merge_scale(engine_apps, 4).spec.replicas == 4
    assert [e.code for e in kubeapi.requests(verb="patch")] == [status, status, 200]


def test_urllib3_silently_retries_a_get_answered_503_with_retry_after(
    kubeapi: KubeAPIServer, engine_apps: k8s.AppsV1Api
) -> None:
    kubeapi.inject(verb="get", path=SCALE, status=503, retry_after=0)
    assert engine_apps.read_namespaced_deployment_scale("web", NS).spec.replicas == 1
    assert [e.code for e in kubeapi.requests(verb="get")] == [503, 200]


def test_latency_and_dropped_connections(kubeapi: KubeAPIServer, make_deployment: Any) -> None:
    kubeapi.create(make_deployment("web"))
    url = f"{kubeapi.url}/apis/apps/v1/namespaces/{NS}/deployments/web/scale"
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {kubeapi.admin_token}"
    ca = str(kubeapi.ca_path)  # per call: REQUESTS_CA_BUNDLE would override session.verify
    kubeapi.inject(verb="get", path=SCALE, latency=0.3)
    started = time.monotonic()
    assert session.get(url, timeout=5, verify=ca).json()["spec"] == {"replicas": 1}
    assert time.monotonic() - started >= 0.3

    before = kubeapi.get("deployments", NS, "web")
    kubeapi.inject(verb="patch", path=SCALE, drop=True)
    with pytest.raises(requests.ConnectionError):
        session.patch(
            url,
            verify=ca,
            data='{"spec": {"replicas": 5}}',
            timeout=5,
            headers={"Content-Type": "application/merge-patch+json"},
        )
    assert kubeapi.get("deployments", NS, "web") == before
    assert [e.code for e in kubeapi.requests(verb="patch")] == [-1]
    session.close()

    with pytest.raises(ValueError, match="a fault needs status=, latency= or drop=True"):
        kubeapi.inject(verb="get")
