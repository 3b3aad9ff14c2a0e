"""The emulator driven by the official `kubernetes` client, over HTTPS and HTTP."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

from sandbox.kubeapi import KubeAPIServer

NS = "aegisops"
ENGINE_TOKEN = "engine-token"
Manifest = Callable[..., dict[str, Any]]
ClientFactory = Callable[..., k8s.ApiClient]


def test_deployment_crud_with_resource_versions_and_generation(
    admin: k8s.ApiClient, make_deployment: Manifest
) -> None:
    apps = k8s.AppsV1Api(admin)
    created = apps.create_namespaced_deployment(NS, make_deployment("web", replicas=2))
    assert created.metadata.generation == 1
    assert created.metadata.uid and created.metadata.creation_timestamp
    rv = int(created.metadata.resource_version)

    read = apps.read_namespaced_deployment("web", NS)
    assert read.spec.replicas == 2
    assert read.spec.strategy.type == "RollingUpdate"  # server default

    read.metadata.labels["tier"] = "front"
    updated = apps.replace_namespaced_deployment("web", NS, read)
    assert int(updated.metadata.resource_version) == rv + 1
    assert updated.metadata.generation == 1  # metadata-only change

    updated.spec.replicas = 5
    bumped = apps.replace_namespaced_deployment("web", NS, updated)
    assert bumped.metadata.generation == 2
    assert int(bumped.metadata.resource_version) == rv + 2

    same = apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 5}})
    assert same.metadata.resource_version == bumped.metadata.resource_version  # no-op write

    # kube's deployment strategy: annotation changes bump the generation too (they are
    # copied to ReplicaSets); label changes and status writes do not
    noted = apps.patch_namespaced_deployment(
        "web", NS, {"metadata": {"annotations": {"aegisops.dev/last-action": "scale_up 1->2"}}}
    )
    assert noted.metadata.generation == 3
    relabelled = apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "y"}}})
    assert relabelled.metadata.generation == 3
    status = apps.patch_namespaced_deployment_status(
        "web", NS, {"status": {"replicas": 5, "observedGeneration": 3}}
    )
    assert (status.metadata.generation, status.status.observed_generation) == (3, 3)
    core = k8s.CoreV1Api(admin)
    service = {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}
    core.create_namespaced_service(NS, service)
    annotated = core.patch_namespaced_service("web", NS, {"metadata": {"annotations": {"a": "b"}}})
    assert annotated.metadata.generation == 1  # other kinds: spec changes only

    listed = apps.list_namespaced_deployment(NS, label_selector="app=web,tier in (front)")
    assert [d.metadata.name for d in listed.items] == ["web"]
    assert apps.list_namespaced_deployment(NS, label_selector="tier!=front").items == []
    by_name = apps.list_namespaced_deployment(NS, field_selector="metadata.name=web")
    assert len(by_name.items) == 1

    status = apps.delete_namespaced_deployment("web", NS)
    assert status["status"] == "Success"
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_deployment("web", NS)
    assert (gone.value.status, gone.value.reason) == (404, "Not Found")
    assert '"reason":"NotFound"' in gone.value.body.replace(" ", "")


def test_scale_subresource_is_a_view_of_the_deployment(
    admin: k8s.ApiClient, kubeapi: KubeAPIServer, make_deployment: Manifest
) -> None:
    apps = k8s.AppsV1Api(admin)
    apps.create_namespaced_deployment(NS, make_deployment("web", replicas=1))
    scale = apps.read_namespaced_deployment_scale("web", NS)
    assert (scale.kind, scale.api_version) == ("Scale", "autoscaling/v1")
    assert scale.spec.replicas == 1
    assert (scale.status.replicas, scale.status.selector) == (0, "app=web")

    patched = apps.patch_namespaced_deployment_scale(
        "web", NS, {"spec": {"replicas": 3}}, _content_type="application/merge-patch+json"
    )
    deploy = apps.read_namespaced_deployment("web", NS)
    assert patched.spec.replicas == deploy.spec.replicas == 3
    assert patched.metadata.resource_version == deploy.metadata.resource_version
    assert deploy.metadata.generation == 2

    put = requests.put(
        f"{kubeapi.url}/apis/apps/v1/namespaces/{NS}/deployments/web/scale",
        json={
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": 0},
        },
        headers={"Authorization": f"Bearer {kubeapi.admin_token}"},
        verify=str(kubeapi.ca_path),
        timeout=5,
    )
    assert put.status_code == 200
    assert put.json()["spec"] == {}  # kube omits spec.replicas when it is 0
    assert apps.read_namespaced_deployment_scale("web", NS).spec.replicas is None

    with pytest.raises(ApiException) as invalid:
        apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": -1}})
    assert invalid.value.status == 422
    assert (
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in invalid.value.body
    )


def test_stale_resource_version_is_a_409_conflict(
    admin: k8s.ApiClient, kubeapi: KubeAPIServer, make_deployment: Manifest
) -> None:
    apps = k8s.AppsV1Api(admin)
    first = apps.create_namespaced_deployment(NS, make_deployment("web"))
    apps.patch_namespaced_deployment("web", NS, {"metadata": {"annotations": {"a": "1"}}})
    stale = first.metadata.resource_version
    before = kubeapi.get("deployments", NS, "web")

    with pytest.raises(ApiException) as conflict:
        apps.patch_namespaced_deployment(
            "web",
            NS,
            {"metadata": {"resourceVersion": stale, "annotations": {"b": "2"}}},
            _content_type="application/merge-patch+json",
        )
    assert (conflict.value.status, conflict.value.reason) == (409, "Conflict")
    body = conflict.value.body
    assert '"reason": "Conflict"' in body
    assert (
        'Operation cannot be fulfilled on deployments.apps \\"web\\": the object has been'
        " modified; please apply your changes to the latest version and try again"
    ) in body
    assert kubeapi.get("deployments", NS, "web") == before

    with pytest.raises(ApiException) as dup:
        apps.create_namespaced_deployment(NS, make_deployment("web"))
    assert dup.value.status == 409 and '"reason": "AlreadyExists"' in dup.value.body


def test_validation_and_missing_namespace(admin: k8s.ApiClient, make_deployment: Manifest) -> None:
    apps = k8s.AppsV1Api(admin)
    bad = make_deployment("web")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(ApiException) as invalid:
        apps.create_namespaced_deployment(NS, bad)
    assert invalid.value.status == 422
    assert "`selector` does not match template `labels`" in invalid.value.body

    with pytest.raises(ApiException) as missing:
        apps.create_namespaced_deployment("nowhere", make_deployment("web", namespace="nowhere"))
    assert missing.value.status == 404
    assert 'namespaces \\"nowhere\\" not found' in missing.value.body


def test_events_with_generate_name_and_leases_with_optimistic_concurrency(
    admin: k8s.ApiClient,
) -> None:
    core = k8s.CoreV1Api(admin)
    event = core.create_namespaced_event(
        NS,
        {
            "metadata": {"generateName": "web."},
            "involvedObject": {"kind": "Deployment", "name": "web"},
            "reason": "Scaled",
            "message": "scaled to 2",
            "type": "Normal",
        },
    )
    assert event.metadata.name.startswith("web.") and len(event.metadata.name) == 9
    new_event = k8s.EventsV1Api(admin).create_namespaced_event(
        NS,
        {
            "metadata": {"generateName": "aegisops-"},
            "reason": "ScaleUp",
            "action": "Scale",
            # A MicroTime: the client re-serializes it with isoformat(), which keeps the
            # six digits only when they are not all zero (see the Lease test below).
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "reportingController": "aegisops",
            "reportingInstance": "aegisops-0",
            "type": "Normal",
        },
    )
    assert new_event.metadata.name.startswith("aegisops-")

    leases = k8s.CoordinationV1Api(admin)
    lease = leases.create_namespaced_lease(
        NS, {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}
    )
    lease.spec.holder_identity = "b"
    leases.replace_namespaced_lease("leader", NS, lease)
    lease.spec.holder_identity = "c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as lost:
        leases.replace_namespaced_lease("leader", NS, lease)
    assert lost.value.status == 409
    assert leases.read_namespaced_lease("leader", NS).spec.holder_identity == "b"


def test_lease_microtimes_are_parsed_and_stored_as_kube_does(
    kubeapi: KubeAPIServer, admin: k8s.ApiClient
) -> None:
    """kube parses MicroTime with exactly six fraction digits and writes it back in UTC.
    The client sends datetimes with isoformat(), which drops an all-zero fraction: kube
    answers that with 400, and so does the emulator."""
    leases = k8s.CoordinationV1Api(admin)
    on_the_second = dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
    lease = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}
    with pytest.raises(ApiException) as rejected:
        leases.create_namespaced_lease(NS, dict(lease, spec={"renewTime": on_the_second}))
    assert rejected.value.status == 400
    assert json.loads(rejected.value.body)["message"] == (
        'Lease in version "v1" cannot be handled as a Lease: parsing time '
        '"2026-01-01T00:00:00+00:00" as "2006-01-02T15:04:05.000000Z07:00": '
        'cannot parse "+00:00" as ".000000"'
    )
    assert kubeapi.objects("leases", NS) == []

    # Over plain HTTP (as client-go sends it): an offset is stored as UTC, six digits kept.
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {
            "holderIdentity": "a",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-01T02:00:00.000000+02:00",
            "renewTime": "2026-01-01T00:00:05.250000Z",
            "leaseTransitions": 0,
        },
    }
    answer = requests.post(
        f"{kubeapi.url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases",
        json=body,
        headers={"Authorization": f"Bearer {kubeapi.admin_token}"},
        verify=str(kubeapi.ca_path),
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    spec = kubeapi.get("leases", NS, "leader")["spec"]
    assert (spec["acquireTime"], spec["renewTime"]) == (
        "2026-01-01T00:00:00.000000Z",
        "2026-01-01T00:00:05.250000Z",
    )
    read = leases.read_namespaced_lease("leader", NS)
    assert read.spec.acquire_time == on_the_second
    assert read.spec.renew_time == on_the_second + dt.timedelta(seconds=5, microseconds=250000)
    with pytest.raises(ApiException) as exists:
        leases.create_namespaced_lease(NS, lease)
    assert (exists.value.status, json.loads(exists.value.body)["reason"]) == (409, "AlreadyExists")


def test_hpa_min_replicas_defaults_to_one_and_merge_patches_like_kube(
    admin: k8s.ApiClient,
) -> None:
    hpas = k8s.AutoscalingV2Api(admin)
    target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    created = hpas.create_namespaced_horizontal_pod_autoscaler(
        NS, {"metadata": {"name": "web"}, "spec": {"scaleTargetRef": target, "maxReplicas": 4}}
    )
    assert created.spec.min_replicas == 1  # autoscaling/v2 defaulting
    merge = "application/merge-patch+json"
    raised = hpas.patch_namespaced_horizontal_pod_autoscaler(
        "web", NS, {"spec": {"minReplicas": 3}}, _content_type=merge
    )
    assert (raised.spec.min_replicas, raised.spec.max_replicas) == (3, 4)
    assert raised.spec.scale_target_ref.name == "web"
    assert int(raised.metadata.resource_version) > int(created.metadata.resource_version)
    cleared = hpas.patch_namespaced_horizontal_pod_autoscaler(
        "web", NS, {"spec": {"minReplicas": None}}, _content_type=merge
    )
    assert cleared.spec.min_replicas == 1  # defaulted again, as on every kube write


def test_hpas_configmaps_secrets_pods_namespaces(admin: k8s.ApiClient) -> None:
    hpas = k8s.AutoscalingV2Api(admin)
    hpas.create_namespaced_horizontal_pod_autoscaler(
        NS,
        {
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 4,
            },
        },
    )
    listed = hpas.list_namespaced_horizontal_pod_autoscaler(NS)
    assert [h.spec.scale_target_ref.name for h in listed.items] == ["web"]

    core = k8s.CoreV1Api(admin)
    core.create_namespaced_config_map(NS, {"metadata": {"name": "cfg"}, "data": {"k": "v"}})
    core.create_namespaced_secret(
        NS, {"metadata": {"name": "slack"}, "stringData": {"url": "https://hooks.example/x"}}
    )
    secret = core.read_namespaced_secret("slack", NS)
    assert (secret.data, secret.string_data) == ({"url": "aHR0cHM6Ly9ob29rcy5leGFtcGxlL3g="}, None)
    assert core.read_namespaced_config_map("cfg", NS).data == {"k": "v"}
    assert core.list_namespaced_pod(NS).items == []
    names = [n.metadata.name for n in core.list_namespace().items]
    assert names == ["aegisops", "default", "kube-system"]


def test_status_subresource_and_auto_status(
    client_for: ClientFactory, make_deployment: Manifest
) -> None:
    with KubeAPIServer(tls=False) as api:
        apps = k8s.AppsV1Api(client_for(api))
        assert api.url.startswith("http://127.0.0.1:")
        apps.create_namespaced_deployment("default", make_deployment("web", namespace="default"))
        apps.patch_namespaced_deployment_status(
            "web",
            "default",
            {"status": {"replicas": 1, "readyReplicas": 1}, "spec": {"replicas": 9}},
        )
        stored = api.get("deployments", "default", "web")
        assert stored["status"] == {"replicas": 1, "readyReplicas": 1}
        assert stored["spec"]["replicas"] == 1  # /status ignores spec
        apps.patch_namespaced_deployment("web", "default", {"status": {"replicas": 7}})
        assert api.get("deployments", "default", "web")["status"]["replicas"] == 1

    with KubeAPIServer(tls=False, auto_status=True) as api:
        apps = k8s.AppsV1Api(client_for(api))
        apps.create_namespaced_deployment("default", make_deployment("web", namespace="default"))
        apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 4}})
        status = apps.read_namespaced_deployment("web", "default").status
        assert (status.replicas, status.ready_replicas, status.observed_generation) == (4, 4, 2)


def test_incluster_loader_over_https_with_lowercase_bearer(
    kubeapi: KubeAPIServer, tmp_path: Path
) -> None:
    env = kubeapi.incluster_files(tmp_path / "sa", token=ENGINE_TOKEN)
    assert env == {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(kubeapi.port),
    }
    assert (tmp_path / "sa" / "namespace").read_text() == "aegisops"
    configuration = k8s.Configuration()
    InClusterConfigLoader(
        token_filename=str(tmp_path / "sa" / "token"),
        cert_filename=str(tmp_path / "sa" / "ca.crt"),
        environ=env,
    ).load_and_set(client_configuration=configuration)
    assert configuration.api_key["BearerToken"].startswith("bearer ")
    with k8s.ApiClient(configuration) as api_client:
        k8s.AppsV1Api(api_client).list_namespaced_deployment(NS)
    entry = kubeapi.requests(verb="list", resource="deployments")[-1]
    assert (entry.user, entry.code) == ("system:serviceaccount:aegisops:aegisops-engine", 200)


def test_access_review_without_rbac_allows(admin: k8s.ApiClient) -> None:
    review = k8s.AuthorizationV1Api(admin).create_self_subject_access_review(
        {
            "spec": {
                "resourceAttributes": {
                    "namespace": NS,
                    "verb": "patch",
                    "group": "apps",
                    "resource": "deployments",
                    "subresource": "scale",
                }
            },
        }
    )
    assert review.status.allowed is True


def test_scale_selector_is_sorted_by_key_like_kube(admin: k8s.ApiClient) -> None:
    """kube prints a selector's requirements sorted by key, not by their text."""
    apps = k8s.AppsV1Api(admin)
    labels = {"app.kubernetes.io/name": "web", "app": "web"}
    manifest = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {
                "matchLabels": labels,
                "matchExpressions": [
                    {"key": "b", "operator": "DoesNotExist"},
                    {"key": "c", "operator": "In", "values": ["y", "x"]},
                ],
            },
            "template": {
                "metadata": {"labels": {**labels, "c": "x"}},
                "spec": {"containers": [{"name": "app", "image": "example/app:1.0"}]},
            },
        },
    }
    apps.create_namespaced_deployment(NS, manifest)
    assert apps.read_namespaced_deployment_scale("web", NS).status.selector == (
        "app=web,app.kubernetes.io/name=web,!b,c in (x,y)"
    )
