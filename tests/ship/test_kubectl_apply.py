"""`kubectl apply -f kubernetes/` on an empty cluster works in one go (the Namespace comes
first), a second apply changes nothing, and `kubectl apply -k .` (the root kustomization)
is the same set of objects. Run with the real kubectl (validation on) against the
Kubernetes API emulator, which serves every kind the manifests hold, the two
prometheus-operator CRDs included.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ship_helpers import ENGINE, MANIFESTS, NAMESPACE, REPO, docs, find

from sandbox.kubeapi import KubeAPIServer

LINE = re.compile(r"^(?P<kind>[a-z]+)(\.[a-z0-9.-]+)?/(?P<name>[a-z0-9-]+) (?P<what>\w+)$")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[KubeAPIServer, Path]]:
    """An empty emulated cluster (namespaces default and kube-system) and an admin kubeconfig."""
    with KubeAPIServer(tls=True) as api:
        yield api, api.write_kubeconfig(tmp_path / "kubeconfig")


def kubectl(kubeconfig: Path, *args: str) -> dict[tuple[str, str], str]:
    """Run kubectl; return {(kind, name): created|unchanged|configured} from its output."""
    # never the developer's own cluster config or ~/.kube cache
    env = {"PATH": os.environ["PATH"], "HOME": str(kubeconfig.parent)}
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)} failed:\n{done.stderr}"
    outcome = {}
    for line in done.stdout.splitlines():
        match = LINE.match(line.strip())
        assert match, f"unexpected kubectl output line: {line!r}"
        outcome[(match["kind"], match["name"])] = match["what"]
    return outcome


def shipped() -> set[tuple[str, str]]:
    return {(d.kind.lower(), d.name) for d in docs()}


def test_apply_creates_everything_in_one_go_and_reapply_changes_nothing(
    cluster: tuple[KubeAPIServer, Path],
) -> None:
    api, kubeconfig = cluster
    first = kubectl(kubeconfig, "apply", "-f", str(MANIFESTS))
    assert set(first) == shipped()
    assert set(first.values()) == {"created"}

    stored = api.get("deployments", NAMESPACE, ENGINE)
    shipped_pod = find("Deployment", ENGINE)["spec"]["template"]["spec"]
    stored_pod = stored["spec"]["template"]["spec"]
    assert (
        stored_pod["containers"][0]["securityContext"]
        == (shipped_pod["containers"][0]["securityContext"])
    )
    assert stored_pod["volumes"][0]["configMap"]["optional"] is True
    config = api.get("configmaps", NAMESPACE, "aegisops-config")
    assert config["data"] == find("ConfigMap", "aegisops-config")["data"]
    versions = {
        name: api.get(resource, NAMESPACE, name)["metadata"]["resourceVersion"]
        for resource, name in (("deployments", ENGINE), ("configmaps", "aegisops-config"))
    }

    second = kubectl(kubeconfig, "apply", "-f", str(MANIFESTS))
    assert set(second) == shipped()
    assert set(second.values()) == {"unchanged"}
    for resource, name in (("deployments", ENGINE), ("configmaps", "aegisops-config")):
        assert api.get(resource, NAMESPACE, name)["metadata"]["resourceVersion"] == versions[name]

    # The root kustomization renders the very same objects: nothing to change either.
    third = kubectl(kubeconfig, "apply", "-k", str(REPO))
    assert set(third) == shipped()
    assert set(third.values()) == {"unchanged"}


def test_the_slack_secret_the_readme_creates_is_the_one_the_engine_reads(
    cluster: tuple[KubeAPIServer, Path], tmp_path: Path
) -> None:
    api, kubeconfig = cluster
    kubectl(kubeconfig, "apply", "-f", str(MANIFESTS / "00-namespace.yaml"))
    # The README's command, rendered client-side: `kubectl create secret` sends protobuf,
    # which the emulator does not speak, so the rendered object is applied instead.
    rendered = subprocess.run(
        [
            "kubectl", "-n", NAMESPACE, "create", "secret", "generic", "aegisops-slack",
            "--from-literal=webhook-url=https://hooks.slack.example/services/T0/B0/x",
            "--dry-run=client", "-o", "yaml",
        ],
        capture_output=True, text=True, timeout=60, check=True,
        env={  # client-side only: never the developer's own KUBECONFIG or ~/.kube
            "PATH": os.environ["PATH"], "HOME": str(tmp_path),
            "KUBECONFIG": str(tmp_path / "no-such-kubeconfig"),
        },
    ).stdout  # fmt: skip
    manifest = tmp_path / "secret.yaml"
    manifest.write_text(rendered)
    assert kubectl(kubeconfig, "apply", "-f", str(manifest)) == {
        ("secret", "aegisops-slack"): "created"
    }
    secret = api.get("secrets", NAMESPACE, "aegisops-slack")
    env = find("Deployment", ENGINE)["spec"]["template"]["spec"]["containers"][0]["env"]
    (ref,) = [e["valueFrom"]["secretKeyRef"] for e in env if e["name"] == "SLACK_WEBHOOK_URL"]
    assert secret["metadata"]["name"] == ref["name"]
    assert set(secret["data"]) == {ref["key"]}


def _created(api: KubeAPIServer) -> list[tuple[str, str]]:
    return [
        (e.resource or "", e.body["metadata"]["name"])
        for e in api.requests(verb="create", code=201)
    ]


def test_apply_order_what_the_readme_says_about_the_service_account(
    cluster: tuple[KubeAPIServer, Path], tmp_path: Path
) -> None:
    """`apply -f kubernetes/` goes in file-name order, so the engine Deployment is created
    before its ServiceAccount (rbac.yaml sorts last) and its first pod waits a moment
    (FailedCreate, retried); `apply -k .` sorts by kind, ServiceAccount and RBAC first."""
    api, kubeconfig = cluster
    kubectl(kubeconfig, "apply", "-f", str(MANIFESTS))
    by_file = _created(api)
    assert by_file.index(("deployments", ENGINE)) < by_file.index(("serviceaccounts", ENGINE))

    with KubeAPIServer(tls=True) as fresh:
        kubectl(fresh.write_kubeconfig(tmp_path / "fresh"), "apply", "-k", str(REPO))
        by_kind = _created(fresh)
    assert by_kind[0] == ("namespaces", NAMESPACE)
    deployment = by_kind.index(("deployments", ENGINE))
    for needed in (("serviceaccounts", ENGINE), ("roles", ENGINE), ("rolebindings", ENGINE)):
        assert by_kind.index(needed) < deployment, needed
    readme = (REPO / "README.md").read_text()
    assert "the engine's first pod may wait a few seconds for its ServiceAccount" in readme
