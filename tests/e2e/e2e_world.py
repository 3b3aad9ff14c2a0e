"""End-to-end helpers on the world's side: a calm starting point for every test, a second
engine identity, the sample app's fault switches, and what the request log proves.

`calm(world)` puts the world back where a test expects it: no faults (emulator, proxy,
Slack, app), no HPA, no Lease, no aegisops.dev record, unlimited capacity, one ready
replica, normal load, and Prometheus showing normal traffic again.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes.client.rest import ApiException

from e2e.e2e_engine import LEASE, NORMAL, P95, RPS
from sandbox.cluster import ARGS_ANNOTATION
from sandbox.procs import stop_process
from sandbox.world import DEPLOYMENT, ENGINE_USER, NAMESPACE, World

RECORD_PREFIX = "aegisops.dev/"
SCALE_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}/scale"
DEPLOYMENT_PATH = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{DEPLOYMENT}"
HPA_PATH = f"/apis/autoscaling/v2/namespaces/{NAMESPACE}/horizontalpodautoscalers/{DEPLOYMENT}"
SECOND_SERVICE_ACCOUNT = "aegisops-engine-b"
SECOND_USER = f"system:serviceaccount:{NAMESPACE}:{SECOND_SERVICE_ACCOUNT}"


def calm(world: World) -> None:
    """Back to the starting point (see the module docstring); polls, never sleeps."""
    world.api.clear_faults()
    world.prom_proxy.set_mode("ok")
    world.slack.clear()
    world.set_capacity(None)
    world.set_load(NORMAL)
    _delete_hpa(world)
    if world.api.objects("leases", NAMESPACE):
        world.api.delete("leases", NAMESPACE, LEASE)
    notes = world.deployment()["metadata"].get("annotations") or {}
    restart = ARGS_ANNOTATION in notes
    cleared = {k: None for k in notes if k.startswith(RECORD_PREFIX) or k == ARGS_ANNOTATION}
    if cleared:
        patch = {"metadata": {"annotations": cleared}}
        world.api.patch("deployments", NAMESPACE, DEPLOYMENT, patch)
    if world.deployment()["spec"].get("replicas") != 1:
        world.scale(1)
    if restart:
        restart_replicas(world)
    world.wait_for(
        lambda: world.replicas() == 1 and _ready(world) == 1, timeout=30, message="1 ready replica"
    )
    for replica in world.kubelet.replicas(namespace=NAMESPACE, name=DEPLOYMENT):
        set_app_fault(replica.url, extra_latency_seconds=0.0, error_rate=0.0)
    world.wait_for(lambda: _normal(world), timeout=60, message="normal traffic in Prometheus")


def _ready(world: World) -> int:
    return int(world.deployment().get("status", {}).get("readyReplicas", 0))


def _normal(world: World) -> bool:
    """Normal traffic, normal latency, one replica: what the baseline was learned on."""
    rps = world.prometheus.scalar(f"sum({RPS})")
    p95 = world.prometheus.scalar(f"max({P95})")
    return rps is not None and 7 <= rps <= 13 and p95 is not None and p95 < 0.12


def _delete_hpa(world: World) -> None:
    try:
        world.delete_hpa()
    except ApiException as err:
        if err.status != 404:
            raise


def restart_replicas(world: World) -> None:
    """Stop every live replica by PID; the kubelet replaces them on its next resync, with
    the Deployment's settings as they are now (sandbox.aegisops.dev/app-args)."""
    old = {r.pod for r in world.kubelet.replicas(namespace=NAMESPACE, name=DEPLOYMENT)}
    for replica in world.kubelet.replicas(namespace=NAMESPACE, name=DEPLOYMENT):
        stop_process(replica.proc)

    def replaced() -> bool:
        now = world.kubelet.replicas(namespace=NAMESPACE, name=DEPLOYMENT)
        return bool(now) and not {r.pod for r in now} & old

    world.wait_for(replaced, timeout=30, message="replicas restarted")


def set_app_args(world: World, args: str) -> None:
    """The sample-app flags new replicas start with (the kubelet reads them at start)."""
    notes = {ARGS_ANNOTATION: args}
    world.api.patch("deployments", NAMESPACE, DEPLOYMENT, {"metadata": {"annotations": notes}})


def set_app_fault(url: str, **faults: float) -> dict[str, Any]:
    """POST /fault on one replica (the sandbox starts replicas with --enable-faults)."""
    request = urllib.request.Request(
        f"{url}/fault",
        data=json.dumps(faults).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def second_identity(world: World, folder: Path) -> Path:
    """In-cluster files of a second service account bound to the engine's Role, so a
    second engine's calls carry their own user in the request log."""
    if not any(
        sa["metadata"]["name"] == SECOND_SERVICE_ACCOUNT
        for sa in world.api.objects("serviceaccounts", NAMESPACE)
    ):
        world.api.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": SECOND_SERVICE_ACCOUNT, "namespace": NAMESPACE},
            }
        )
        world.api.create(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": SECOND_SERVICE_ACCOUNT, "namespace": NAMESPACE},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "aegisops-engine",
                },
                "subjects": [
                    {
                        "kind": "ServiceAccount",
                        "name": SECOND_SERVICE_ACCOUNT,
                        "namespace": NAMESPACE,
                    }
                ],
            }
        )
    token = secrets.token_hex(16)
    world.api.add_token(token, SECOND_USER)
    world.api.incluster_files(folder, token=token)
    return folder


def lease(world: World) -> dict[str, Any]:
    found: dict[str, Any] = world.api.get("leases", NAMESPACE, LEASE)
    return found


# -- what the request log proves ---------------------------------------------------------


def writes(world: World, *, user: str = ENGINE_USER, after: int = 0) -> list[Any]:
    """The user's writes (not the Lease's), in order, after request `after` (a seq)."""
    return [
        e
        for e in world.api.requests(user=user)
        if e.seq > after
        and e.verb in ("create", "update", "patch", "delete")
        and e.resource != "leases"
    ]


def scale_patches(world: World, *, after: int = 0, user: str = ENGINE_USER) -> list[Any]:
    """The user's PATCHes of aegisops-app's scale that the API applied."""
    return [
        e
        for e in writes(world, user=user, after=after)
        if e.subresource == "scale" and e.code == 200
    ]


def last_seq(world: World) -> int:
    entries = world.api.requests()
    return entries[-1].seq if entries else 0


def assert_scales_bounded_and_once(
    world: World, *, after: int, low: int, high: int, user: str = ENGINE_USER
) -> list[int]:
    """Every replica count the engine wrote is within [low, high], and every applied scale
    PATCH follows its own record (no two carry the same last-action + last-action-at: no
    action was applied twice). Returns the counts written, in order."""
    records, counts = [], []
    applied = [e for e in writes(world, user=user, after=after) if e.code == 200]
    last_record: tuple[str, str] | None = None
    for entry in applied:
        if entry.subresource is None and entry.verb == "patch":
            notes = (entry.body.get("metadata") or {}).get("annotations") or {}
            if notes.get("aegisops.dev/last-action-at"):
                last_record = (
                    notes.get("aegisops.dev/last-action"),
                    notes["aegisops.dev/last-action-at"],
                )
        if entry.subresource == "scale":
            assert entry.path == SCALE_PATH
            assert entry.content_type == "application/merge-patch+json"
            assert set(entry.body) == {"spec"} and set(entry.body["spec"]) == {"replicas"}
            replicas = entry.body["spec"]["replicas"]
            assert low <= replicas <= high, (replicas, low, high)
            assert last_record is not None, f"scale PATCH #{entry.seq} without a record before it"
            records.append(last_record)
            counts.append(replicas)
    assert len(records) == len(set(records)), records
    return counts


def slack_texts(world: World) -> list[str]:
    """The text of every Slack message the receiver got, in order."""
    return [m["text"] for m in world.slack.messages()]


def wait_slack(world: World, prefix: str, *, count: int = 1, timeout: float = 30) -> list[str]:
    """The Slack texts starting with `prefix`, once there are at least `count` of them."""

    def found() -> list[str] | None:
        hits = [t for t in slack_texts(world) if t.startswith(prefix)]
        return hits if len(hits) >= count else None

    hits: list[str] = world.wait_for(found, timeout=timeout, message=f"{count}x Slack: {prefix}")
    return hits
