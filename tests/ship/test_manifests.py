"""kubernetes/ as shipped: schema-valid, applied in the right order, secure by default,
and wired together (labels, ports, names, the engine's config) the way docs/design.md says.
"""

from __future__ import annotations

import copy
import json
import subprocess
import tomllib
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from crd_schemas import SCHEMAS
from ship_helpers import (
    APP,
    ENGINE,
    MANIFESTS,
    NAMESPACE,
    REPO,
    Doc,
    docs,
    engine_config_text,
    engine_container,
    find,
    manifest_files,
    pod_specs,
)

from aegisops.config import load_config

K8S_VERSION = "1.32.0"  # the kind/kubectl minor this project targets; shipped by the package
BUILTIN = [d for d in docs() if d.kind not in SCHEMAS]
CUSTOM = [d for d in docs() if d.kind in SCHEMAS]


def _ids(items: list[Doc]) -> list[str]:
    return [d.id for d in items]


# -- layout ------------------------------------------------------------------------------


def test_apply_order_namespace_first_and_nothing_kubectl_would_choke_on() -> None:
    files = [p.name for p in manifest_files()]
    assert files[0] == "00-namespace.yaml"
    first = [d for d in docs() if d.file == files[0]]
    assert [(d.kind, d.name) for d in first] == [("Namespace", NAMESPACE)]
    # `kubectl apply -f kubernetes/` would try to apply a kustomization as an object.
    assert not (MANIFESTS / "kustomization.yaml").exists()
    assert not (MANIFESTS / "kustomization.yml").exists()
    # Every file holds objects: nothing stray that apply -f would reject.
    assert sorted({d.file for d in docs()}) == sorted(files)


def test_every_object_lives_in_the_aegisops_namespace_and_no_secret_is_shipped() -> None:
    for doc in docs():
        assert doc.kind != "Secret", f"{doc.id}: never ship a Secret; see examples/"
        if doc.kind == "Namespace":
            continue
        assert doc.obj["metadata"].get("namespace") == NAMESPACE, doc.id


def test_root_kustomization_applies_exactly_the_same_files() -> None:
    kustomization = yaml.safe_load((REPO / "kustomization.yaml").read_text())
    listed = sorted(PurePosixPath(r).name for r in kustomization["resources"])
    assert listed == sorted(p.name for p in manifest_files())
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(REPO)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    objects = {(o["kind"], o["metadata"]["name"]) for o in yaml.safe_load_all(rendered) if o}
    assert objects == {(d.kind, d.name) for d in docs()}


def test_the_slack_secret_example_is_outside_the_applied_folder_and_fake() -> None:
    example = yaml.safe_load((REPO / "examples" / "slack-secret.example.yaml").read_text())
    assert (example["kind"], example["metadata"]["name"]) == ("Secret", "aegisops-slack")
    assert "REPLACE" in example["stringData"]["webhook-url"]


# -- schemas -----------------------------------------------------------------------------


@pytest.mark.parametrize("doc", BUILTIN, ids=_ids(BUILTIN))
def test_builtin_kinds_validate_against_the_kubernetes_openapi_schema(doc: Doc) -> None:
    kubernetes_validate.validate(doc.obj, K8S_VERSION, strict=True)


def test_the_openapi_validation_does_reject_a_bad_deployment() -> None:
    bad = copy.deepcopy(find("Deployment", ENGINE))
    bad["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    typo = copy.deepcopy(find("Deployment", ENGINE))
    typo["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


@pytest.mark.parametrize("doc", CUSTOM, ids=_ids(CUSTOM))
def test_custom_resources_validate_against_the_derived_crd_schema(doc: Doc) -> None:
    jsonschema.validate(doc.obj, SCHEMAS[doc.kind])


def test_the_derived_crd_schema_rejects_a_misspelt_relabeling() -> None:
    bad = copy.deepcopy(find("ServiceMonitor", APP))
    bad["spec"]["endpoints"][0]["relabelings"][0]["sourcelabels"] = ["x"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, SCHEMAS["ServiceMonitor"])


# -- security ----------------------------------------------------------------------------


@pytest.mark.parametrize("workload", [w for w, _ in pod_specs()])
def test_every_pod_meets_pod_security_restricted(workload: str) -> None:
    spec = dict(pod_specs())[workload]
    pod_sc = spec.get("securityContext", {})
    assert pod_sc.get("runAsNonRoot") is True
    assert isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0
    assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in spec and "hostPID" not in spec
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "privileged" not in sc
        resources = container["resources"]
        for key in ("cpu", "memory"):
            assert key in resources["requests"] and key in resources["limits"], key
    labels = find("Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_only_the_engine_pod_gets_a_service_account_token() -> None:
    tokens = {w: spec.get("automountServiceAccountToken") for w, spec in pod_specs()}
    assert tokens == {
        f"Deployment/{ENGINE}": True,
        f"Deployment/{APP}": False,
        "Job/aegisops-loadgen": False,
    }
    engine = dict(pod_specs())[f"Deployment/{ENGINE}"]
    assert engine["serviceAccountName"] == ENGINE
    # The ServiceAccount itself mounts nothing unless a pod opts in.
    assert find("ServiceAccount", ENGINE)["automountServiceAccountToken"] is False
    for workload, spec in pod_specs():
        if workload != f"Deployment/{ENGINE}":
            assert spec.get("serviceAccountName", "default") == "default", workload


def test_engine_deployment_security_probes_resources_and_secret_wiring() -> None:
    deployment = find("Deployment", ENGINE)
    # Two engines, one acting (the Lease holder): a rollout surges a follower first and
    # never goes below one running engine.
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = deployment["spec"]["template"]["spec"]
    container = engine_container()

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "capabilities": {"drop": ["ALL"]},
    }

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert live["httpGet"]["path"] == "/healthz"
    assert ready["httpGet"]["path"] == "/readyz"
    assert ports[live["httpGet"]["port"]] == ports[ready["httpGet"]["port"]] == 8080

    resources = container["resources"]
    assert _quantity(resources["requests"]["cpu"]) <= _quantity(resources["limits"]["cpu"])
    assert _quantity(resources["requests"]["memory"]) <= _quantity(resources["limits"]["memory"])

    downward = {e["name"]: e["valueFrom"] for e in container["env"] if e["name"].startswith("POD_")}
    assert downward == {
        "POD_NAME": {"fieldRef": {"fieldPath": "metadata.name"}},
        "POD_NAMESPACE": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    }
    (slack,) = [e for e in container["env"] if e["name"] == "SLACK_WEBHOOK_URL"]
    assert slack["valueFrom"] == {
        "secretKeyRef": {"name": "aegisops-slack", "key": "webhook-url", "optional": True}
    }
    assert "value" not in slack  # never a literal URL in the manifest

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert container["args"] == ["run", "--config", "/etc/aegisops/config.yaml"]
    assert mounts["config"]["mountPath"] == "/etc/aegisops" and mounts["config"]["readOnly"]
    assert volumes["config"]["configMap"] == {"name": "aegisops-config", "optional": True}
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]


def _quantity(text: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    value = str(text)
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


# -- wiring ------------------------------------------------------------------------------


def test_the_shipped_engine_config_loads_and_matches_the_manifests(tmp_path: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(engine_config_text())
    config = load_config(path, env={})  # the engine's own validation, PromQL parsed too
    assert [(t.namespace, t.deployment) for t in config.targets] == [(NAMESPACE, APP)]
    assert config.server.port == 8080
    assert config.kubernetes.mode == "incluster"
    assert config.slack.webhook_env == "SLACK_WEBHOOK_URL"
    assert config.prometheus.url == "http://prometheus-operated.monitoring.svc:9090"
    assert (
        config.prometheus.workload_labels.namespace,
        config.prometheus.workload_labels.deployment,
    ) == ("namespace", "deployment")


def test_the_lease_the_engine_elects_on_is_the_one_its_role_may_update() -> None:
    section = yaml.safe_load(engine_config_text())["leader_election"]
    assert section == {
        "enabled": True,
        "lease_name": ENGINE,
        "namespace": None,  # POD_NAMESPACE: the engine's own namespace
        "identity": None,  # POD_NAME-<pid>
        "lease_duration_seconds": 15,
        "renew_every_seconds": 5,
    }
    role = find("Role", ENGINE)
    assert role["metadata"]["namespace"] == find("Deployment", ENGINE)["metadata"]["namespace"]
    named = [r for r in role["rules"] if r["resources"] == ["leases"] and "resourceNames" in r]
    assert [r["resourceNames"] for r in named] == [[section["lease_name"]]]


def test_app_scrape_wiring_produces_the_namespace_and_deployment_labels() -> None:
    deployment = find("Deployment", APP)
    service = find("Service", APP)
    monitor = find("ServiceMonitor", APP)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    # `deployment` comes from this pod label: it must be the Deployment's own name.
    assert pod_labels["app.kubernetes.io/name"] == deployment["metadata"]["name"] == APP
    assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _selects(service["spec"]["selector"], pod_labels)
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    targets = {
        r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"] if "targetLabel" in r
    }
    assert targets["namespace"] == ["__meta_kubernetes_namespace"]
    assert targets["deployment"] == ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]
    container_ports = {
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


def test_engine_metrics_are_scraped_with_their_own_workload_labels_kept() -> None:
    service = find("Service", ENGINE)
    monitor = find("ServiceMonitor", ENGINE)
    pod_labels = find("Deployment", ENGINE)["spec"]["template"]["metadata"]["labels"]
    assert _selects(service["spec"]["selector"], pod_labels)
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # aegisops_* series carry the watched workload's namespace/deployment: keep them.
    assert endpoint["honorLabels"] is True
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_networkpolicy_limits_engine_egress_to_dns_prometheus_apiserver_and_https() -> None:
    policy = find("NetworkPolicy", ENGINE)["spec"]
    pod_labels = find("Deployment", ENGINE)["spec"]["template"]["metadata"]["labels"]
    assert _selects(policy["podSelector"]["matchLabels"], pod_labels)
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]

    def ports(rule: dict[str, Any]) -> set[tuple[int, str]]:
        return {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}

    def namespaces(rule: dict[str, Any]) -> set[str]:
        peers = rule.get("to", rule.get("from", []))
        return {p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers}

    egress = {frozenset(ports(r)): r for r in policy["egress"]}
    assert set(egress) == {
        frozenset({(53, "UDP"), (53, "TCP")}),
        frozenset({(9090, "TCP")}),
        frozenset({(443, "TCP"), (6443, "TCP")}),
    }
    assert namespaces(egress[frozenset({(53, "UDP"), (53, "TCP")})]) == {"kube-system"}
    assert namespaces(egress[frozenset({(9090, "TCP")})]) == {"monitoring"}
    (ingress,) = policy["ingress"]
    assert ports(ingress) == {(8080, "TCP")} and namespaces(ingress) == {"monitoring"}

    # The peers the shipped config names are the ones the policy lets through.
    config = yaml.safe_load(engine_config_text())
    prometheus = urlsplit(config["prometheus"]["url"])
    service, namespace = prometheus.hostname.split(".")[:2]
    assert (namespace, prometheus.port) == ("monitoring", 9090), service
    container_port = engine_container()["ports"][0]["containerPort"]
    assert config["server"]["port"] == container_port == 8080


def test_loadgen_job_targets_the_app_service_by_dns_name() -> None:
    job = find("Job", "aegisops-loadgen")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    service = find("Service", APP)
    (port,) = service["spec"]["ports"]
    assert container["command"] == ["aegisops-loadgen"]
    assert (
        container["image"]
        == find("Deployment", APP)["spec"]["template"]["spec"]["containers"][0]["image"]
    )  # the load generator ships in the sample-app image
    args = container["args"]
    assert f"--target=http://{APP}.{NAMESPACE}.svc.cluster.local:{port['port']}/" in args
    assert "--profile=surge" in args and "--allow-non-loopback" in args
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_dashboard_is_labelled_for_the_sidecar_and_covers_every_signal() -> None:
    config_map = find("ConfigMap", "aegisops-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (body,) = config_map["data"].values()
    dashboard = json.loads(body)
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"namespace", "deployment"} <= variables
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for metric in (
        "http_requests_total",
        "http_request_latency_seconds_bucket",
        "process_resident_memory_bytes",
        "aegisops_anomaly_score",
        "aegisops_replicas",
        "aegisops_actions_total",
    ):
        matching = [e for e in exprs if metric in e]
        assert matching, f"no panel shows {metric}"
        for expr in matching:
            assert '"$namespace"' in expr and '"$deployment"' in expr, expr


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_image_tags_follow_the_package_versions() -> None:
    versions = {
        name: tomllib.loads((REPO / folder / "pyproject.toml").read_text())["project"]["version"]
        for name, folder in (
            ("aegisops-engine", "ai-engine"),
            ("aegisops-sample-app", "sample-app"),
        )
    }
    images = {c["image"] for _, spec in pod_specs() for c in spec["containers"]}
    assert images == {f"aegisops/{name}:{version}" for name, version in versions.items()}


def test_the_app_ships_with_its_fault_endpoint_off() -> None:
    """POST /fault can leak memory to an OOM kill: never on in what users apply."""
    for workload, spec in pod_specs():
        for container in spec["containers"]:
            words = [*(container.get("command") or []), *(container.get("args") or [])]
            assert "--enable-faults" not in words, workload
            env = {e["name"]: e.get("value") for e in container.get("env") or []}
            assert env.get("APP_ENABLE_FAULTS", "false") == "false", workload
