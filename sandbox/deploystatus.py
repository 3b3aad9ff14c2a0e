"""A Deployment's `status` as kube-controller-manager's deployment controller writes it.

Pure: the Deployment as read, how many of its pods run and are ready, and the time in;
the new `status` out (zero counts omitted, as the API's `omitempty` does). Follows
pkg/controller/deployment (sync.go calculateStatus, progress.go syncRolloutStatus) for a
Deployment with one ReplicaSet whose every pod is up to date:

- `replicas` and `updatedReplicas`: the pods that exist, Pending ones included (the
  sandbox's pods exist as soon as they are desired, started or not);
- `readyReplicas` = `availableReplicas` (minReadySeconds is not emulated);
- `unavailableReplicas` = spec.replicas - available;
- `Available`: True (`MinimumReplicasAvailable`) when available >= spec.replicas -
  maxUnavailable (rolling update, 25% rounded down by default), else False
  (`MinimumReplicasUnavailable`);
- `Progressing`: True `NewReplicaSetAvailable` once complete; True `ReplicaSetUpdated`
  (lastUpdateTime moved) when more pods became ready; False `ProgressDeadlineExceeded`
  when neither for `progressDeadlineSeconds` since the last update; otherwise unchanged.
  As in kube, a pure scale-up that never gets its pods keeps `NewReplicaSetAvailable`:
  syncRolloutStatus skips every progress check while `isCompleteDeployment` (status
  replicas == updatedReplicas, always so with one ReplicaSet, and the condition's reason
  is `NewReplicaSetAvailable`), so DeploymentProgressing (more updated replicas) is
  never asked and no deadline runs (kubernetes/kubernetes#106054, #106697 repro 1: "scale
  0 -> 1 with a bad image stays Progressing=True"). A scaled-up Deployment whose pods
  stay Pending is only seen in `readyReplicas` < `spec.replicas`; the engine must time
  that itself. The deadline is watched from a `ReplicaSetUpdated` condition only (a new
  Deployment, or one that has not completed yet).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # kube's rand.SafeEncodeString alphabet


def replicaset_name(deployment: Obj) -> str:
    """`<deployment>-<pod-template-hash>`: a stable 10-character hash of the pod template."""
    template = json.dumps(deployment.get("spec", {}).get("template", {}), sort_keys=True)
    digest = hashlib.sha256(template.encode()).digest()
    suffix = "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in digest[:10])
    return f"{deployment['metadata']['name']}-{suffix}"


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _scaled(value: Any, *, total: int, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        return int(text)
    exact = int(text[:-1]) * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def max_unavailable(deployment: Obj) -> int:
    """deploymentutil.MaxUnavailable: 0 unless rolling update; capped at spec.replicas."""
    spec = deployment.get("spec", {})
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {"type": "RollingUpdate"}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or replicas == 0:
        return 0
    rolling = strategy.get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge", "25%"), total=replicas, round_up=True)
    unavailable = _scaled(rolling.get("maxUnavailable", "25%"), total=replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # ResolveFenceposts
    return min(unavailable, replicas)


def _condition(kind: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def _set(conditions: list[Obj], new: Obj, *, touch: bool = False) -> list[Obj]:
    """SetDeploymentCondition (touch=False) or the Progressing special case (touch=True)."""
    current = next((c for c in conditions if c["type"] == new["type"]), None)
    same = current is not None and (current["status"], current["reason"]) == (
        new["status"],
        new["reason"],
    )
    if same and not touch:
        return conditions
    if current is not None and current["status"] == new["status"]:
        new = {**new, "lastTransitionTime": current["lastTransitionTime"]}
    return [*(c for c in conditions if c["type"] != new["type"]), new]


def _timed_out(deployment: Obj, progressing: Obj | None, now: datetime) -> bool:
    deadline = deployment.get("spec", {}).get("progressDeadlineSeconds")
    if deadline is None or progressing is None:
        return False
    if progressing["reason"] == "NewReplicaSetAvailable":
        return False
    if progressing["reason"] == "ProgressDeadlineExceeded":
        return True
    since = datetime.strptime(progressing["lastUpdateTime"], "%Y-%m-%dT%H:%M:%SZ")
    return (now.astimezone(UTC) - since.replace(tzinfo=UTC)).total_seconds() > deadline


def deployment_status(*, deployment: Obj, ready: int, now: datetime) -> Obj:
    """The new status for `deployment` with `ready` running pods; the rest are Pending."""
    spec_replicas = int(deployment.get("spec", {}).get("replicas", 1))
    old: Obj = deployment.get("status") or {}
    pods = max(spec_replicas, ready)
    counts = {
        "replicas": pods,
        "updatedReplicas": pods,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(spec_replicas - ready, 0),
    }
    stamp, rs = timestamp(now), replicaset_name(deployment)
    conditions: list[Obj] = list(old.get("conditions") or [])
    if ready >= spec_replicas - max_unavailable(deployment):
        available = ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
    else:
        missing = "Deployment does not have minimum availability."
        available = ("False", "MinimumReplicasUnavailable", missing)
    conditions = _set(conditions, _condition("Available", *available, stamp))
    progressing = next((c for c in conditions if c["type"] == "Progressing"), None)
    if pods == spec_replicas == ready:
        message = f'ReplicaSet "{rs}" has successfully progressed.'
        new = _condition("Progressing", "True", "NewReplicaSetAvailable", message, stamp)
        conditions = _set(conditions, new)
    elif progressing is None or ready > int(old.get("readyReplicas", 0)):
        message = f'ReplicaSet "{rs}" is progressing.'
        new = _condition("Progressing", "True", "ReplicaSetUpdated", message, stamp)
        conditions = _set(conditions, new, touch=True)
    elif _timed_out(deployment, progressing, now):
        message = f'ReplicaSet "{rs}" has timed out progressing.'
        new = _condition("Progressing", "False", "ProgressDeadlineExceeded", message, stamp)
        conditions = _set(conditions, new)
    order = {"Available": 0, "Progressing": 1}
    conditions.sort(key=lambda c: order.get(c["type"], 2))
    status: Obj = {"observedGeneration": deployment["metadata"].get("generation")}
    status.update({key: value or None for key, value in counts.items()})
    status["conditions"] = conditions
    return status
