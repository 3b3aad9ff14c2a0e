"""RBAC is least privilege, provably: the Role grants exactly the engine's calls
(docs/design.md), and running those calls as the engine's service account against the
emulator, in RBAC mode loaded from kubernetes/rbac.yaml, uses every rule and is never
denied. The opt-in examples (kubernetes/examples/) grant exactly what raise_min and
discovery add. SelfSubjectAccessReviews (`aegisops check`) are granted to every authenticated
user by system:basic-user in real clusters, so they are not in the Role.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ship_helpers import APP, BIN, ENGINE, MANIFESTS, NAMESPACE, engine_config_text, find, of_kind

from aegisops.config import KubernetesConfig
from aegisops.kube import Forbidden, KubeClient
from aegisops.leader import LeaderElector, LeaderParams
from sandbox.kubeapi import KubeAPIServer
from sandbox.prometheus import PrometheusServer

ENGINE_USER = f"system:serviceaccount:{NAMESPACE}:{ENGINE}"
TOKEN = "engine-sa-token"
RBAC_FILE = MANIFESTS / "rbac.yaml"
HPA_EXAMPLE = MANIFESTS / "examples" / "rbac-hpa-raise-min.yaml"
DISCOVERY_EXAMPLE = MANIFESTS / "examples" / "rbac-discovery.yaml"
LEASE = ENGINE  # leader_election.lease_name in the shipped config

# (apiGroup, resource, resourceNames) -> verbs: exactly the calls listed in docs/design.md
# and docs/safety.md. `create` cannot be limited by name (RBAC does not know it yet).
EXPECTED = {
    ("apps", "deployments", ()): {"get", "patch"},
    ("apps", "deployments/scale", ()): {"get", "patch"},
    ("autoscaling", "horizontalpodautoscalers", ()): {"list"},
    ("coordination.k8s.io", "leases", ()): {"create"},
    ("coordination.k8s.io", "leases", (LEASE,)): {"get", "update"},
}
EXAMPLES = {
    HPA_EXAMPLE: {("autoscaling", "horizontalpodautoscalers", ()): {"get", "patch"}},
    DISCOVERY_EXAMPLE: {("apps", "deployments", ()): {"list"}},
}
Grants = dict[tuple[str, str, tuple[str, ...]], set[str]]


def grants(role: dict[str, Any]) -> Grants:
    """What a Role allows, checked for wildcards and non-resource URLs on the way."""
    granted: Grants = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "resourceNames", "verbs"}, rule
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field] and all("*" not in v for v in rule[field]), rule
        names = tuple(rule.get("resourceNames", ()))
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource, names), set()).update(rule["verbs"])
    return granted


# -- the Role as written -----------------------------------------------------------------


def test_role_is_namespaced_without_wildcards_and_grants_exactly_the_engine_calls() -> None:
    assert not of_kind("ClusterRole") and not of_kind("ClusterRoleBinding")
    role = find("Role", ENGINE)
    assert role["metadata"]["namespace"] == NAMESPACE
    assert grants(role) == EXPECTED


@pytest.mark.parametrize("path", list(EXAMPLES), ids=lambda p: p.name)
def test_each_opt_in_example_grants_exactly_its_feature_to_the_engine(path: Path) -> None:
    """Outside kubernetes/ (never applied by `kubectl apply -f kubernetes/`), one Role and
    its binding to the engine's service account, saying in comments when to apply it."""
    assert path.parent.parent == MANIFESTS
    role, binding = yaml.safe_load_all(path.read_text())
    assert (role["kind"], binding["kind"]) == ("Role", "RoleBinding")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == NAMESPACE
    assert grants(role) == EXAMPLES[path]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": ENGINE, "namespace": NAMESPACE}
    ]
    assert "# Opt-in: apply ONLY when" in path.read_text().splitlines()[0]


def test_binding_ties_the_role_to_the_service_account_the_engine_runs_as() -> None:
    binding = find("RoleBinding", ENGINE)
    assert binding["metadata"]["namespace"] == NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": ENGINE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": ENGINE, "namespace": NAMESPACE}
    ]
    account = find("ServiceAccount", ENGINE)
    assert account["metadata"]["namespace"] == NAMESPACE
    pod = find("Deployment", ENGINE)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# -- the Role in use ---------------------------------------------------------------------


@pytest.fixture
def rbac_api() -> Iterator[KubeAPIServer]:
    """The emulator in RBAC mode with kubernetes/rbac.yaml, the shipped app Deployment seeded."""
    with KubeAPIServer(tls=True, tokens={TOKEN: ENGINE_USER}, rbac_files=[RBAC_FILE]) as api:
        api.create(find("Namespace", NAMESPACE))
        api.create(find("Deployment", APP))
        yield api


@pytest.fixture
def engine_client(rbac_api: KubeAPIServer, tmp_path: Path) -> Iterator[KubeClient]:
    """The engine's own Kubernetes client, authenticated in-cluster as its service account."""
    sa_dir = tmp_path / "serviceaccount"
    environ = rbac_api.incluster_files(sa_dir, token=TOKEN)
    config = KubernetesConfig(
        mode="incluster", kubeconfig=None, serviceaccount_dir=str(sa_dir), timeout_seconds=5
    )
    with KubeClient(config=config, environ=environ) as kube:
        assert kube.auth.mode == "incluster"
        yield kube


def test_every_engine_call_is_allowed_and_every_role_rule_is_used(
    rbac_api: KubeAPIServer, engine_client: KubeClient
) -> None:
    # One engine pass that acts: read, check for an HPA, record state, scale.
    assert engine_client.hpa_targets(namespace=NAMESPACE) == set()
    before = engine_client.get_scale(namespace=NAMESPACE, name=APP)
    deployment = engine_client.get_deployment(namespace=NAMESPACE, name=APP)
    engine_client.patch_annotations(
        namespace=NAMESPACE,
        name=APP,
        annotations={"aegisops.dev/original-replicas": str(before.replicas)},
        resource_version=deployment.resource_version,
    )
    after = engine_client.patch_scale(namespace=NAMESPACE, name=APP, replicas=before.replicas + 1)
    assert after.replicas == before.replicas + 1
    engine_client.restart(namespace=NAMESPACE, name=APP, at="2026-11-26T12:00:00Z")
    # Leader election: create the Lease, then read and renew it; stop releases it.
    params = LeaderParams(lease_name=LEASE, namespace=NAMESPACE, identity="engine-0-1")
    elector = LeaderElector(kube=engine_client, params=params)
    assert elector.step() and elector.step()
    elector.stop(release=True)

    made = rbac_api.requests(user=ENGINE_USER)
    assert {(e.verb, e.resource, e.subresource) for e in made} == {
        ("list", "horizontalpodautoscalers", None),
        ("get", "deployments", "scale"),
        ("get", "deployments", None),
        ("patch", "deployments", None),
        ("patch", "deployments", "scale"),
        ("create", "leases", None),
        ("get", "leases", None),
        ("update", "leases", None),
    }
    # Allowed, but not there yet: the first elector reads 404, then creates the Lease.
    failed = [(e.verb, e.resource, e.code) for e in made if e.code >= 400]
    assert failed == [("get", "leases", 404)]

    usage = rbac_api.rbac_rule_usage()
    role_rules = [r for r in usage if (r.kind, r.namespace, r.name) == ("Role", NAMESPACE, ENGINE)]
    assert len(role_rules) == len(find("Role", ENGINE)["rules"])
    unused = [str(rule) for rule in role_rules if not usage[rule]]
    assert unused == [], f"rules no engine call needed: {unused}"


def test_the_opt_in_examples_allow_raise_min_and_discovery_and_every_rule_is_used(
    tmp_path: Path,
) -> None:
    files = [RBAC_FILE, HPA_EXAMPLE, DISCOVERY_EXAMPLE]
    with KubeAPIServer(tls=True, tokens={TOKEN: ENGINE_USER}, rbac_files=files) as api:
        api.create(find("Namespace", NAMESPACE))
        api.create(find("Deployment", APP))
        api.create(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": APP, "namespace": NAMESPACE},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
                    "minReplicas": 1,
                    "maxReplicas": 3,
                },
            }
        )
        sa_dir = tmp_path / "serviceaccount"
        environ = api.incluster_files(sa_dir, token=TOKEN)
        config = KubernetesConfig(
            mode="incluster", kubeconfig=None, serviceaccount_dir=str(sa_dir), timeout_seconds=5
        )
        with KubeClient(config=config, environ=environ) as kube:
            hpa = kube.hpas(namespace=NAMESPACE)[APP]
            assert kube.patch_hpa_min(namespace=NAMESPACE, name=hpa.name, min_replicas=2)
            found = kube.list_deployments(
                namespace=NAMESPACE, label_selector="app.kubernetes.io/name"
            )
            assert list(found) == [APP]
        assert api.requests(user=ENGINE_USER, code=403) == []
        usage = api.rbac_rule_usage()
        for example in ("aegisops-engine-hpa-raise-min", "aegisops-engine-discovery"):
            rules = [
                r for r in usage if (r.kind, r.namespace, r.name) == ("Role", NAMESPACE, example)
            ]
            assert rules and all(usage[r] for r in rules), example


def test_anything_beyond_the_role_is_denied(
    rbac_api: KubeAPIServer, engine_client: KubeClient
) -> None:
    rbac_api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})
    other = dict(find("Deployment", APP), metadata={"name": APP, "namespace": "other"})
    rbac_api.create(other)
    with pytest.raises(Forbidden):
        engine_client.get_scale(namespace="other", name=APP)
    with pytest.raises(Forbidden):
        engine_client.patch_scale(namespace="other", name=APP, replicas=3)
    assert rbac_api.get("deployments", "other", APP)["spec"]["replicas"] == 1
    denied = rbac_api.requests(user=ENGINE_USER, code=403)
    assert {(e.verb, e.namespace) for e in denied} == {("get", "other"), ("patch", "other")}


def test_aegisops_check_finds_every_permission_it_needs(
    rbac_api: KubeAPIServer, tmp_path: Path, prometheus: PrometheusServer
) -> None:
    """`aegisops check` in the pod: its permission checklist (SelfSubjectAccessReviews,
    allowed to every authenticated user) is all green with exactly this Role."""
    sa_dir = tmp_path / "serviceaccount"
    env = {"PATH": os.environ["PATH"], **rbac_api.incluster_files(sa_dir, token=TOKEN)}
    config = yaml.safe_load(engine_config_text())
    config["prometheus"]["url"] = prometheus.url  # up, but has no series: those lines fail
    config["kubernetes"]["serviceaccount_dir"] = str(sa_dir)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [str(BIN / "aegisops"), "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    kube_lines = [line for line in done.stdout.splitlines() if " kubernetes" in line]
    # auth, the five calls, the target, the Lease (get, update, create: leader election)
    assert len(kube_lines) == 1 + 5 + 1 + 3, done.stdout
    assert all(line.startswith("[ok]") for line in kube_lines), done.stdout
    assert rbac_api.requests(user=ENGINE_USER, code=403) == []
