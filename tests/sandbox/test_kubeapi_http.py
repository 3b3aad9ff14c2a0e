"""Raw HTTP against the emulator: bad bodies, unknown resources, patch media types,
discovery and OpenAPI documents, field validation modes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from sandbox.kubeapi import KubeAPIServer

NS = "aegisops"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"


class Http:
    def __init__(self, api: KubeAPIServer) -> None:
        self.api = api
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {api.admin_token}"

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        ctype: str = "application/json",
        **params: str,
    ) -> requests.Response:
        raw = isinstance(body, (str, bytes, Iterator)) or body is None
        data = body if raw else json.dumps(body)
        return self.session.request(
            method,
            self.api.url + path,
            data=data,
            params=params,
            headers={"Content-Type": ctype},
            timeout=5,
            verify=str(self.api.ca_path),
        )


@pytest.fixture
def http(kubeapi: KubeAPIServer) -> Iterator[Http]:
    client = Http(kubeapi)
    yield client
    client.session.close()


def test_malformed_bodies_are_400_status(http: Http, kubeapi: KubeAPIServer) -> None:
    broken = http("POST", DEPLOYMENTS, '{"apiVersion": "apps/v1", "kind": ')
    assert broken.status_code == 400
    body = broken.json()
    assert (body["kind"], body["status"], body["reason"], body["code"]) == (
        "Status",
        "Failure",
        "BadRequest",
        400,
    )
    assert body["message"].startswith("couldn't get version/kind; json parse error: ")

    bad_yaml = http("POST", DEPLOYMENTS, "kind: [unclosed", ctype="application/yaml")
    assert bad_yaml.status_code == 400
    assert bad_yaml.json()["message"].startswith("error converting YAML to JSON: yaml: ")
    not_object = http("POST", DEPLOYMENTS, "[1, 2]")
    assert not_object.json()["message"] == ("the body of the request must be a JSON or YAML object")
    wrong_group = http(
        "POST", DEPLOYMENTS, {"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "x"}}
    )
    assert wrong_group.json()["message"] == (
        "the API version in the data (v1) does not match the expected API version (apps/v1)"
    )
    wrong_type = http(
        "POST",
        DEPLOYMENTS,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "x"},
            "spec": {"replicas": "3"},
        },
    )
    assert (wrong_type.status_code, wrong_type.json()["message"]) == (
        400,
        (
            'Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal'
            " string into Go struct field DeploymentSpec.spec.replicas of type int32"
        ),
    )
    assert kubeapi.objects("deployments") == []


def test_yaml_create_and_warn_mode_drops_unknown_fields(
    http: Http, kubeapi: KubeAPIServer, make_deployment: Any
) -> None:
    manifest = make_deployment("web")
    manifest["spec"]["bogus"] = 1
    created = http("POST", DEPLOYMENTS, yaml.safe_dump(manifest), ctype="application/yaml")
    assert created.status_code == 201
    assert created.headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    assert "bogus" not in kubeapi.get("deployments", NS, "web")["spec"]

    strict = http(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"spec": {"bogus": 2}},
        ctype="application/merge-patch+json",
        fieldValidation="Strict",
    )
    assert (strict.status_code, strict.json()["message"]) == (
        400,
        (
            'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error:'
            ' unknown field "spec.bogus"'
        ),
    )


def test_chunked_request_body(http: Http, kubeapi: KubeAPIServer) -> None:
    def pieces() -> Iterator[bytes]:
        yield b'{"apiVersion": "v1", "kind": "ConfigMap",'
        yield b' "metadata": {"name": "chunky"}, "data": {"k": "v"}}'

    created = http("POST", f"/api/v1/namespaces/{NS}/configmaps", pieces())
    assert created.status_code == 201
    assert kubeapi.get("configmaps", NS, "chunky")["data"] == {"k": "v"}


def test_unknown_resources_are_404(http: Http) -> None:
    for path in (
        f"/apis/apps/v1/namespaces/{NS}/widgets",
        "/apis/nope.example.com/v1",
        "/api/v2/pods",
        f"{DEPLOYMENTS}/web/logs",
        "/openapi/v2",
    ):
        answer = http("GET", path)
        assert answer.status_code == 404, path
        assert answer.json()["message"] == "the server could not find the requested resource"
    missing = http("GET", f"{DEPLOYMENTS}/nope").json()
    assert (missing["reason"], missing["message"], missing["details"]) == (
        "NotFound",
        'deployments.apps "nope" not found',
        {"name": "nope", "group": "apps", "kind": "deployments"},
    )


def test_patch_media_types(http: Http, kubeapi: KubeAPIServer, make_deployment: Any) -> None:
    kubeapi.create(make_deployment("web"))
    kubeapi.create(
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"endpoints": []},
        }
    )
    for ctype in ("text/plain", "application/apply-patch+yaml", "application/json"):
        refused = http("PATCH", f"{DEPLOYMENTS}/web", {"spec": {}}, ctype=ctype)
        assert refused.status_code == 415, ctype
        assert refused.json()["reason"] == "UnsupportedMediaType"
    smp_on_crd = http(
        "PATCH",
        f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors/web",
        {"spec": {}},
        ctype="application/strategic-merge-patch+json",
    )
    assert smp_on_crd.status_code == 415

    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 1},
        {"op": "replace", "path": "/spec/replicas", "value": 2},
    ]
    patched = http("PATCH", f"{DEPLOYMENTS}/web", ops, ctype="application/json-patch+json")
    assert patched.json()["spec"]["replicas"] == 2
    failed = http("PATCH", f"{DEPLOYMENTS}/web", ops, ctype="application/json-patch+json")
    assert failed.status_code == 422
    assert kubeapi.get("deployments", NS, "web")["spec"]["replicas"] == 2


def test_discovery_documents(http: Http) -> None:
    apps = http("GET", "/apis/apps/v1").json()
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    groups = {g["name"] for g in http("GET", "/apis").json()["groups"]}
    assert {
        "apps",
        "autoscaling",
        "coordination.k8s.io",
        "events.k8s.io",
        "rbac.authorization.k8s.io",
        "monitoring.coreos.com",
        "authorization.k8s.io",
    } <= groups
    assert http("GET", "/api").json()["versions"] == ["v1"]
    assert (
        requests.get(f"{http.api.url}/version", verify=str(http.api.ca_path), timeout=5).json()[
            "gitVersion"
        ]
        == "v1.32.0-aegisops-emulator"
    )
    root = http("GET", "/openapi/v3").json()["paths"]
    gv = http("GET", root["apis/apps/v1"]["serverRelativeURL"]).json()
    patch_op = gv["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch_op["parameters"]]
    assert patch_op["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }


def test_request_log_records_query_and_parsed_body(http: Http, kubeapi: KubeAPIServer) -> None:
    http("GET", DEPLOYMENTS, labelSelector="app=web", limit="5")
    http(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"spec": {"replicas": 2}},
        ctype="application/merge-patch+json",
    )
    listed, patched = kubeapi.requests(resource="deployments")
    assert (listed.verb, listed.query, listed.code) == (
        "list",
        {"labelSelector": "app=web", "limit": "5"},
        200,
    )
    assert (patched.verb, patched.body, patched.code, patched.user) == (
        "patch",
        {"spec": {"replicas": 2}},
        404,
        "kubernetes-admin",
    )
    assert kubeapi.requests(path=r"/deployments/web$") == [patched]
    kubeapi.clear_requests()
    assert kubeapi.requests() == []
