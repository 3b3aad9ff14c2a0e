"""The real kubectl (v1.32) against the emulator, through a written kubeconfig."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sandbox.kubeapi import KubeAPIServer

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
"""

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      serviceAccountName: web
      containers:
        - name: app
          image: example/web:1.0
          ports: [{containerPort: 8080, name: http}]
          env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: demo}
data: {key: value}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web, namespace: demo}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: web, namespace: demo}
rules:
  - {apiGroups: [apps], resources: [deployments/scale], verbs: [get, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: web, namespace: demo}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}
subjects: [{kind: ServiceAccount, name: web, namespace: demo}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress: [{ports: [{port: 53, protocol: UDP}]}]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: web, namespace: demo}
spec:
  selector: {matchLabels: {app: web}}
  endpoints: [{port: http}]
"""

KINDS = [
    "namespace/demo",
    "deployment.apps/web",
    "service/web",
    "configmap/web-config",
    "serviceaccount/web",
    "role.rbac.authorization.k8s.io/web",
    "rolebinding.rbac.authorization.k8s.io/web",
    "networkpolicy.networking.k8s.io/web",
    "servicemonitor.monitoring.coreos.com/web",
]


def _manifests(folder: Path, app: str = APP) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "00-namespace.yaml").write_text(NAMESPACE)
    (folder / "10-app.yaml").write_text(app)
    return folder


def _table(output: str) -> list[list[str]]:
    return [line.split() for line in output.strip().splitlines()]


def test_apply_reapply_and_three_way_merge(
    kubeapi: KubeAPIServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    folder = _manifests(tmp_path / "manifests")
    first = kubectl("apply", "-f", str(folder))
    assert first.stdout.splitlines() == [f"{kind} created" for kind in KINDS]
    assert all(
        e.query.get("fieldValidation") == "Strict"
        for e in kubeapi.requests(verb="create", namespace="demo")
    )
    again = kubectl("apply", "-f", str(folder))
    assert again.stdout.splitlines() == [f"{kind} unchanged" for kind in KINDS]

    changed = APP.replace('- {name: A, value: "1"}', '- {name: C, value: "3"}')
    _manifests(folder, changed.replace("replicas: 2", "replicas: 4"))
    kubeapi.clear_requests()
    third = kubectl("apply", "-f", str(folder / "10-app.yaml"))
    assert "deployment.apps/web configured" in third.stdout.splitlines()
    (sent,) = kubeapi.requests(verb="patch", resource="deployments")
    assert sent.content_type == "application/strategic-merge-patch+json"
    container = sent.body["spec"]["template"]["spec"]["containers"][0]
    assert container["$setElementOrder/env"] == [{"name": "C"}, {"name": "B"}]
    assert {"$patch": "delete", "name": "A"} in container["env"]
    stored = kubeapi.get("deployments", "demo", "web")
    assert stored["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "C", "value": "3"},
        {"name": "B", "value": "2"},
    ]
    assert (stored["spec"]["replicas"], stored["metadata"]["generation"]) == (4, 2)


def test_unknown_field_is_rejected_with_validation_on(
    kubeapi: KubeAPIServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        APP.split("---")[0]
        .replace("namespace: demo", "namespace: default")
        .replace("  replicas: 2", "  replicas: 2\n  replicass: 3")
        .replace(
            "image: example/web:1.0", "image: example/web:1.0\n          imagePullPolicyy: Always"
        )
    )
    done = kubectl("apply", "-f", str(bad), check=False)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f'Error from server (BadRequest): error when creating "{bad}": Deployment in version "v1"'
        " cannot be handled as a Deployment: strict decoding error: unknown field"
        ' "spec.replicass", unknown field "spec.template.spec.containers[0].imagePullPolicyy"'
    )
    assert kubeapi.objects("deployments") == []


def test_get_scale_annotate(kubeapi: KubeAPIServer, kubectl: Kubectl, make_deployment: Any) -> None:
    kubeapi.create(make_deployment("web", replicas=2))
    listed = kubectl("-n", "aegisops", "get", "deploy")
    rows = _table(listed.stdout)
    assert rows[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[1][:4] == ["web", "0/2", "0", "0"]

    assert kubectl("-n", "aegisops", "scale", "deploy/web", "--replicas=3").stdout == (
        "deployment.apps/web scaled\n"
    )
    assert kubeapi.get("deployments", "aegisops", "web")["spec"]["replicas"] == 3
    (scaled,) = kubeapi.requests(subresource="scale", code=200)
    assert (scaled.verb, scaled.body) == ("patch", {"spec": {"replicas": 3}})

    kubectl("-n", "aegisops", "annotate", "deploy", "web", "aegisops.dev/last-action=scale_up 2->3")
    annotations = kubeapi.get("deployments", "aegisops", "web")["metadata"]["annotations"]
    assert annotations == {"aegisops.dev/last-action": "scale_up 2->3"}

    as_json = json.loads(kubectl("-n", "aegisops", "get", "deploy", "web", "-o", "json").stdout)
    assert as_json["metadata"]["generation"] == 3  # scale, then annotate: both bump (kube)

    missing = kubectl("-n", "aegisops", "get", "deploy", "nope", check=False)
    assert missing.stderr.strip() == (
        'Error from server (NotFound): deployments.apps "nope" not found'
    )


def test_get_watch_with_request_timeout(
    kubeapi: KubeAPIServer, kubectl_for: Any, make_deployment: Any, tmp_path: Path
) -> None:
    kubeapi.create(make_deployment("web", replicas=1))
    kubectl = kubectl_for(kubeapi)
    kubectl("-n", "aegisops", "get", "deploy")  # warms the discovery cache
    config = next((tmp_path / "kubectl-home").glob("config-*"))
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(config),
            "-n",
            "aegisops",
            "get",
            "deploy",
            "--watch",
            "--request-timeout=3s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path / "kubectl-home")},
    )
    try:
        deadline = time.monotonic() + 10
        while not kubeapi.requests(verb="watch") and time.monotonic() < deadline:
            time.sleep(0.05)  # poll the request log for the watch to open
        assert kubeapi.requests(verb="watch"), "kubectl never opened the watch"
        kubeapi.patch("deployments", "aegisops", "web", {"spec": {"replicas": 3}})
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    rows = _table(out)
    assert [row[:2] for row in rows] == [["NAME", "READY"], ["web", "0/1"], ["web", "0/3"]]
    assert proc.returncode == 0, err


def test_plain_http_and_protobuf_create_is_unsupported(kubectl_for: Any) -> None:
    with KubeAPIServer(tls=False) as api:
        kubectl = kubectl_for(api)
        assert kubectl("get", "ns", "-o", "name").stdout.split() == [
            "namespace/default",
            "namespace/kube-system",
        ]
        typed = kubectl("create", "namespace", "extra", check=False)
        assert typed.returncode == 1
        assert "does not speak protobuf" in typed.stderr
        (create,) = api.requests(verb="create")
        assert (create.code, create.content_type) == (415, "application/vnd.kubernetes.protobuf")
        assert [n["metadata"]["name"] for n in api.objects("namespaces")] == [
            "default",
            "kube-system",
        ]
