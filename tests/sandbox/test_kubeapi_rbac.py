"""RBAC mode: Roles and bindings from YAML and from the API; 403 with kube's message shape;
which rule allowed which request."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from sandbox.kubeapi import KubeAPIServer, RBACFileError, RuleRef

NS = "aegisops"
ENGINE = "system:serviceaccount:aegisops:aegisops-engine"
RBAC_YAML = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: aegisops-engine, namespace: aegisops}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: aegisops-engine, namespace: aegisops}
rules:
  - {apiGroups: [apps], resources: [deployments/scale], verbs: [get, patch]}
  - {apiGroups: [apps], resources: [deployments], verbs: [get, list, patch]}
  - {apiGroups: [autoscaling], resources: [horizontalpodautoscalers], verbs: [list]}
  - {apiGroups: [""], resources: [configmaps], resourceNames: [engine-config], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: aegisops-engine, namespace: aegisops}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: aegisops-engine}
subjects: [{kind: ServiceAccount, name: aegisops-engine, namespace: aegisops}]
"""
ClientFactory = Callable[..., k8s.ApiClient]


@pytest.fixture
def rbac_api(tmp_path: Path, make_deployment: Any) -> Iterator[KubeAPIServer]:
    rbac = tmp_path / "rbac.yaml"
    rbac.write_text(RBAC_YAML)
    with KubeAPIServer(tls=True, rbac_files=[rbac], tokens={"engine": ENGINE}) as api:
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        api.create(make_deployment("web"))
        api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "engine-config", "namespace": NS},
                "data": {},
            }
        )
        yield api


def _status(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    assert exc.value.status == 403
    body: dict[str, Any] = json.loads(exc.value.body)
    return body


def test_engine_gets_only_what_the_role_grants(
    rbac_api: KubeAPIServer, client_for: ClientFactory
) -> None:
    engine = client_for(rbac_api, token="engine")
    apps, core = k8s.AppsV1Api(engine), k8s.CoreV1Api(engine)
    assert apps.read_namespaced_deployment_scale("web", NS).spec.replicas == 1
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    apps.read_namespaced_deployment("web", NS)
    apps.list_namespaced_deployment(NS)
    apps.patch_namespaced_deployment("web", NS, {"metadata": {"annotations": {"a": "b"}}})
    k8s.AutoscalingV2Api(engine).list_namespaced_horizontal_pod_autoscaler(NS)
    core.read_namespaced_config_map("engine-config", NS)
    before = rbac_api.get("deployments", NS, "web")

    with pytest.raises(ApiException) as put_scale:
        apps.replace_namespaced_deployment_scale(
            "web", NS, {"metadata": {"name": "web"}, "spec": {"replicas": 5}}
        )
    assert _status(put_scale) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": (
            f'deployments.apps "web" is forbidden: User "{ENGINE}" cannot update resource'
            ' "deployments/scale" in API group "apps" in the namespace "aegisops"'
        ),
        "reason": "Forbidden",
        "details": {"name": "web", "group": "apps", "kind": "deployments"},
        "code": 403,
    }
    assert rbac_api.get("deployments", NS, "web") == before

    with pytest.raises(ApiException) as other_ns:
        apps.list_namespaced_deployment("default")
    assert _status(other_ns)["message"] == (
        f'deployments.apps is forbidden: User "{ENGINE}" cannot list resource "deployments"'
        ' in API group "apps" in the namespace "default"'
    )
    with pytest.raises(ApiException) as cluster:
        core.list_namespace()
    assert _status(cluster)["message"] == (
        f'namespaces is forbidden: User "{ENGINE}" cannot list resource "namespaces"'
        ' in API group "" at the cluster scope'
    )
    with pytest.raises(ApiException) as named:
        core.read_namespaced_config_map("other", NS)
    assert _status(named)["details"] == {"name": "other", "kind": "configmaps"}
    with pytest.raises(ApiException):
        apps.delete_namespaced_deployment("web", NS)
    assert rbac_api.get("deployments", NS, "web") == before


def test_rule_usage_names_the_rule_behind_each_request(
    rbac_api: KubeAPIServer, client_for: ClientFactory
) -> None:
    engine = client_for(rbac_api, token="engine")
    apps = k8s.AppsV1Api(engine)
    apps.read_namespaced_deployment_scale("web", NS)
    apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    apps.list_namespaced_deployment(NS)
    k8s.AppsV1Api(client_for(rbac_api)).read_namespaced_deployment("web", NS)  # admin

    def role_rule(index: int) -> RuleRef:
        return RuleRef("Role", NS, "aegisops-engine", index)

    usage = {
        rule: [(e.verb, e.resource, e.subresource) for e in entries]
        for rule, entries in rbac_api.rbac_rule_usage().items()
    }
    assert usage == {
        role_rule(0): [("get", "deployments", "scale"), ("patch", "deployments", "scale")],
        role_rule(1): [("list", "deployments", None)],
        role_rule(2): [],
        role_rule(3): [],
    }
    assert str(role_rule(0)) == "Role aegisops/aegisops-engine rule 0"
    (admin_get,) = rbac_api.requests(verb="get", subresource=None, resource="deployments")
    assert (admin_get.user, admin_get.rule) == ("kubernetes-admin", None)


def test_roles_created_through_the_api_count_and_access_reviews_answer(
    rbac_api: KubeAPIServer, client_for: ClientFactory
) -> None:
    engine = k8s.CoreV1Api(client_for(rbac_api, token="engine"))
    rbac = k8s.RbacAuthorizationV1Api(client_for(rbac_api))
    rbac.create_cluster_role(
        {
            "metadata": {"name": "ns-reader"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "engine-ns-reader"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "ns-reader",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "aegisops-engine", "namespace": NS}],
        }
    )
    assert len(engine.list_namespace().items) == 3
    assert rbac_api.rbac_rule_usage()[RuleRef("ClusterRole", "", "ns-reader", 0)][0].verb == "list"

    reviews = k8s.AuthorizationV1Api(client_for(rbac_api, token="engine"))

    def review(**attrs: str) -> Any:
        return reviews.create_self_subject_access_review(
            {"spec": {"resourceAttributes": {"namespace": NS, "group": "apps", **attrs}}}
        ).status

    allowed = review(verb="patch", resource="deployments", subresource="scale")
    assert allowed.allowed is True
    assert allowed.reason == (
        'RBAC: allowed by RoleBinding "aegisops/aegisops-engine" of Role "aegisops-engine"'
        f' to User "{ENGINE}"'
    )
    assert review(verb="delete", resource="deployments").allowed is False


def test_credentials_and_rbac_file_errors(rbac_api: KubeAPIServer, tmp_path: Path) -> None:
    answer = requests.get(
        f"{rbac_api.url}/api/v1/namespaces",
        verify=str(rbac_api.ca_path),
        headers={"Authorization": "Bearer wrong"},
        timeout=5,
    )
    assert (answer.status_code, answer.json()["reason"]) == (401, "Unauthorized")
    anonymous = requests.get(
        f"{rbac_api.url}/api/v1/namespaces", verify=str(rbac_api.ca_path), timeout=5
    )
    assert anonymous.json()["message"] == (
        'namespaces is forbidden: User "system:anonymous" cannot list resource "namespaces"'
        ' in API group "" at the cluster scope'
    )
    # kube grants SelfSubjectAccessReview to system:authenticated only (system:basic-user)
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}},
    }
    anonymous_review = requests.post(
        f"{rbac_api.url}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        verify=str(rbac_api.ca_path),
        json=review,
        timeout=5,
    )
    assert anonymous_review.status_code == 403
    assert anonymous_review.json()["message"] == (
        'selfsubjectaccessreviews.authorization.k8s.io is forbidden: User "system:anonymous"'
        ' cannot create resource "selfsubjectaccessreviews" in API group'
        ' "authorization.k8s.io" at the cluster scope'
    )

    with pytest.raises(RBACFileError, match=r"cannot read RBAC file .*missing.yaml: No such"):
        KubeAPIServer(rbac_files=[tmp_path / "missing.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Role\nrules: [\n")
    with pytest.raises(RBACFileError, match=r"RBAC file .*broken.yaml is not valid YAML"):
        KubeAPIServer(rbac_files=[broken])
