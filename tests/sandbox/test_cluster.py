"""The sandbox kubelet: Deployments in the emulator become sample-app processes, over HTTP."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sandbox.cluster import ARGS_ANNOTATION, Kubelet, app_settings
from sandbox.deploystatus import deployment_status, replicaset_name
from sandbox.kubeapi import ADMIN_USER, KubeAPIServer
from sandbox.procs import cmdline, pid_alive, wait_until
from sandbox.world import AppSpec, app_deployment

NS, NAME = "aegisops", "aegisops-app"
STATUS_PATH = f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/status"
Targets = list[tuple[str, dict[str, str]]]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
STAMP = "2026-11-26T12:00:00Z"


def _clock() -> datetime:
    return NOW


def _conditions(*, available: bool, progressing: str) -> list[dict[str, str]]:
    """The Deployment conditions kube's controller writes, at the fixed clock."""
    rs = replicaset_name(app_deployment(spec=AppSpec()))
    messages = {
        "NewReplicaSetAvailable": f'ReplicaSet "{rs}" has successfully progressed.',
        "ReplicaSetUpdated": f'ReplicaSet "{rs}" is progressing.',
    }
    return [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "lastUpdateTime": STAMP,
            "lastTransitionTime": STAMP,
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
        },
        {
            "type": "Progressing",
            "status": "True",
            "lastUpdateTime": STAMP,
            "lastTransitionTime": STAMP,
            "reason": progressing,
            "message": messages[progressing],
        },
    ]


COMPLETE = _conditions(available=True, progressing="NewReplicaSetAvailable")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with KubeAPIServer(tls=True) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield server


@pytest.fixture
def api_client(api: KubeAPIServer, tmp_path: Path) -> Iterator[k8s.ApiClient]:
    kubeconfig = api.write_kubeconfig(tmp_path / "admin.kubeconfig")
    with k8s_config.new_client_from_config(config_file=str(kubeconfig)) as client:
        yield client


def _scale(client: k8s.ApiClient, replicas: int) -> None:
    k8s.AppsV1Api(client).patch_namespaced_deployment_scale(
        NAME, NS, {"spec": {"replicas": replicas}}, _content_type="application/merge-patch+json"
    )


def _status(api: KubeAPIServer) -> dict[str, Any]:
    status: dict[str, Any] = api.get("deployments", NS, NAME).get("status", {})
    return status


def test_scale_up_and_down_runs_processes_writes_status_and_targets(
    api: KubeAPIServer, api_client: k8s.ApiClient, tmp_path: Path
) -> None:
    api.create(app_deployment(spec=AppSpec(replicas=1, workers=2, service_time_seconds=0.05)))
    published: list[Targets] = []
    targets_file = tmp_path / "targets.txt"
    kubelet = Kubelet(
        api_client=api_client,
        on_targets=lambda ns, name, targets: published.append(targets),
        targets_file=targets_file,
        clock=_clock,
    )
    with kubelet:
        [first] = kubelet.replicas(namespace=NS, name=NAME)
        assert requests.get(f"{first.url}/healthz", timeout=2).status_code == 200
        assert cmdline(first.proc.pid).endswith("--workers 2 --service-time 0.05")
        # the sandbox's replicas take runtime faults (the shipped image leaves /fault off)
        assert requests.get(f"{first.url}/fault", timeout=2).json() == {
            "error_rate": 0.0,
            "extra_latency_seconds": 0.0,
            "leak_bytes_per_second": 0,
        }
        assert targets_file.read_text() == f"{first.url}\n"
        assert published[-1] == [
            (first.address, {"namespace": NS, "deployment": NAME, "pod": first.pod})
        ]
        one = {
            "observedGeneration": 1,
            "replicas": 1,
            "updatedReplicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "unavailableReplicas": None,
            "conditions": COMPLETE,
        }
        assert _status(api) == {k: v for k, v in one.items() if v is not None}
        [patch] = api.requests(verb="patch", subresource="status")
        assert (patch.path, patch.user, patch.content_type, patch.body) == (
            STATUS_PATH,
            ADMIN_USER,
            "application/merge-patch+json",
            {"status": one},
        )

        _scale(api_client, 3)
        wait_until(lambda: _status(api).get("readyReplicas") == 3, timeout=20, message="3 ready")
        replicas = kubelet.replicas(namespace=NS, name=NAME)
        assert replicas[0].pod == first.pod
        assert len({r.port for r in replicas}) == 3
        assert targets_file.read_text() == "".join(f"{r.url}\n" for r in replicas)
        assert sorted(t[1]["pod"] for t in published[-1]) == sorted(r.pod for r in replicas)
        assert _status(api)["observedGeneration"] == 2

        # what the engine does: an annotation write bumps a Deployment's generation (kube),
        # and the kubelet reports it observed, with no change to the replicas
        k8s.AppsV1Api(api_client).patch_namespaced_deployment(
            NAME, NS, {"metadata": {"annotations": {"aegisops.dev/last-action": "scale_up 1->3"}}}
        )
        wait_until(lambda: _status(api).get("observedGeneration") == 3, timeout=20, message="gen 3")
        assert kubelet.replicas(namespace=NS, name=NAME) == replicas

        _scale(api_client, 1)
        wait_until(lambda: _status(api).get("readyReplicas") == 1, timeout=20, message="1 ready")
        assert _status(api)["observedGeneration"] == 4
        assert [r.pod for r in kubelet.replicas(namespace=NS, name=NAME)] == [first.pod]
        assert [pid_alive(r.proc.pid) for r in replicas] == [True, False, False]
        assert targets_file.read_text() == f"{first.url}\n"
        all_pids = [r.proc.pid for r in replicas]
    assert not any(pid_alive(pid) for pid in all_pids)
    assert targets_file.read_text() == ""
    assert published[-1] == []


def test_scale_to_zero_omits_counts_like_kubernetes(
    api: KubeAPIServer, api_client: k8s.ApiClient
) -> None:
    api.create(app_deployment(spec=AppSpec(replicas=1)))
    with Kubelet(api_client=api_client, clock=_clock) as kubelet:
        _scale(api_client, 0)
        wait_until(lambda: "replicas" not in _status(api), timeout=20, message="status emptied")
        assert _status(api) == {"observedGeneration": 2, "conditions": COMPLETE}
        assert kubelet.replicas(namespace=NS, name=NAME) == []


def test_dead_replica_is_replaced(api: KubeAPIServer, api_client: k8s.ApiClient) -> None:
    api.create(app_deployment(spec=AppSpec(replicas=1)))
    with Kubelet(api_client=api_client, resync_seconds=0.5) as kubelet:
        [first] = kubelet.replicas(namespace=NS, name=NAME)
        os.kill(first.proc.pid, signal.SIGKILL)
        [second] = wait_until(
            lambda: [r for r in kubelet.replicas(namespace=NS, name=NAME) if r.pod != first.pod],
            timeout=20,
            message="a replacement replica",
        )
        assert requests.get(f"{second.url}/healthz", timeout=2).status_code == 200
        assert second.proc.pid != first.proc.pid


def test_deleted_deployment_stops_its_replicas(
    api: KubeAPIServer, api_client: k8s.ApiClient, tmp_path: Path
) -> None:
    api.create(app_deployment(spec=AppSpec(replicas=2)))
    targets_file = tmp_path / "targets.txt"
    with Kubelet(api_client=api_client, targets_file=targets_file) as kubelet:
        pids = kubelet.pids()
        assert len(pids) == 2
        k8s.AppsV1Api(api_client).delete_namespaced_deployment(NAME, NS)
        wait_until(
            lambda: not any(pid_alive(pid) for pid in pids), timeout=20, message="replicas stopped"
        )
        assert kubelet.pids() == []
        assert targets_file.read_text() == ""


def test_unmanaged_deployments_are_left_alone(
    api: KubeAPIServer, api_client: k8s.ApiClient
) -> None:
    other = app_deployment(spec=AppSpec(replicas=1))
    other["metadata"]["name"] = "other"
    other["metadata"]["labels"] = {"app.kubernetes.io/name": "other"}
    api.create(other)
    with Kubelet(api_client=api_client) as kubelet:
        assert kubelet.pids() == []
    assert api.get("deployments", NS, "other")["status"] == {}
    assert api.requests(verb="patch") == []


def test_replica_that_cannot_start_is_reported_and_retried(
    api: KubeAPIServer, api_client: k8s.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    broken = app_deployment(spec=AppSpec(replicas=1))
    broken["metadata"]["annotations"] = {ARGS_ANNOTATION: "--workers 0"}
    api.create(broken)
    caplog.set_level(logging.ERROR, logger="sandbox.cluster")
    with Kubelet(api_client=api_client, resync_seconds=0.3) as kubelet:
        assert kubelet.pids() == []
        wait_until(
            lambda: len(caplog.records) >= 2, timeout=20, message="a retry after the failure"
        )
    first = caplog.records[0].getMessage()
    assert first.startswith(f"{NS}/{NAME}: reconcile failed: pod {NAME}-")
    assert "exited with code 2:" in first
    assert first.endswith("aegisops-sample-app: error: argument --workers: must be >= 1, got 0")
    assert _status(api) == {}


def test_exception_inside_with_stops_every_process(
    api: KubeAPIServer, api_client: k8s.ApiClient
) -> None:
    api.create(app_deployment(spec=AppSpec(replicas=2)))
    pids: list[int] = []
    before = set(threading.enumerate())  # threads of other fixtures are not this test's
    with pytest.raises(RuntimeError, match="boom"), Kubelet(api_client=api_client) as kubelet:
        pids = kubelet.pids()
        raise RuntimeError("boom")
    assert len(pids) == 2
    assert not any(pid_alive(pid) for pid in pids)
    started = set(threading.enumerate()) - before
    assert [t.name for t in started if t.name.startswith("kubelet")] == []


def test_app_settings_from_args_env_and_annotation(caplog: pytest.LogCaptureFixture) -> None:
    deployment = app_deployment(spec=AppSpec(workers=4, service_time_seconds=0.02))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["args"] += ["--port", "9000", "--jitter=0.2"]
    container["env"] = [
        {"name": "APP_SEED", "value": "7"},
        {"name": "APP_PORT", "value": "1"},
        {"name": "OTHER", "value": "x"},
        {"name": "APP_FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
    ]
    deployment["metadata"]["annotations"] = {ARGS_ANNOTATION: "--workers 1 --error-rate=0.5"}
    caplog.set_level(logging.WARNING, logger="sandbox.cluster")
    flags, env = app_settings(deployment)
    assert flags == [
        "--workers", "4", "--service-time", "0.02", "--jitter", "0.2",
        "--workers", "1", "--error-rate", "0.5",
    ]  # fmt: skip
    assert env == {"APP_SEED": "7"}
    assert [r.getMessage() for r in caplog.records] == [
        "ignoring sample-app argument '--port' (not one the kubelet passes on)"
    ]


class _SecondSpawnFails(Kubelet):
    """A kubelet whose second process spawn fails (e.g. out of file descriptors)."""

    spawned: list[int]

    def _start_replica(self, key: tuple[str, str], **kwargs: Any) -> Any:
        if len(self.spawned) == 1:
            raise OSError(24, "Too many open files")
        replica = super()._start_replica(key, **kwargs)
        self.spawned.append(replica.proc.pid)
        return replica


def test_failed_spawn_stops_the_replicas_already_started(
    api: KubeAPIServer, api_client: k8s.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.create(app_deployment(spec=AppSpec(replicas=2)))
    kubelet = _SecondSpawnFails(api_client=api_client)
    kubelet.spawned = []
    caplog.set_level(logging.ERROR, logger="sandbox.cluster")
    kubelet.reconcile_all()  # logs the failure, as every reconcile error
    try:
        assert len(kubelet.spawned) == 1
        assert not pid_alive(kubelet.spawned[0])  # not orphaned
        assert kubelet.pids() == []
        assert caplog.records[0].getMessage() == (
            f"{NS}/{NAME}: reconcile failed: [Errno 24] Too many open files"
        )
    finally:
        kubelet.stop()


def test_capacity_keeps_replicas_pending_until_it_grows(
    api: KubeAPIServer,
    api_client: k8s.ApiClient,
    tmp_path: Path,
    kubectl_for: Callable[[KubeAPIServer], Kubectl],
) -> None:
    api.create(app_deployment(spec=AppSpec(replicas=1)))
    published: list[Targets] = []
    targets_file = tmp_path / "targets.txt"
    kubectl = kubectl_for(api)
    with Kubelet(
        api_client=api_client,
        capacity=2,
        clock=_clock,
        on_targets=lambda ns, name, targets: published.append(targets),
        targets_file=targets_file,
    ) as kubelet:
        _scale(api_client, 3)
        wait_until(lambda: _status(api).get("readyReplicas") == 2, timeout=20, message="2 ready")
        assert _status(api) == {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "unavailableReplicas": 1,
            "conditions": _conditions(available=False, progressing="ReplicaSetUpdated"),
        }
        running = kubelet.replicas(namespace=NS, name=NAME)
        assert len(running) == 2 and len(kubelet.pids()) == 2
        assert len(published[-1]) == 2
        assert targets_file.read_text() == "".join(f"{r.url}\n" for r in running)
        waiting = kubectl(
            "rollout", "status", f"deployment/{NAME}", "-n", NS, "--timeout=1s", check=False
        )
        assert waiting.returncode == 1
        assert waiting.stdout.splitlines()[-1] == (
            f'Waiting for deployment "{NAME}" rollout to finish: '
            "2 of 3 updated replicas are available..."
        )

        kubelet.set_capacity(3)
        wait_until(lambda: _status(api).get("readyReplicas") == 3, timeout=20, message="3 ready")
        assert _status(api) == {
            "observedGeneration": 2,
            "replicas": 3,
            "updatedReplicas": 3,
            "readyReplicas": 3,
            "availableReplicas": 3,
            "conditions": COMPLETE,
        }
        assert [r.pod for r in kubelet.replicas(namespace=NS, name=NAME)][:2] == [
            r.pod for r in running
        ]
        done = kubectl("rollout", "status", f"deployment/{NAME}", "-n", NS, "--timeout=5s")
        assert done.stdout == f'deployment "{NAME}" successfully rolled out\n'

        kubelet.set_capacity(1)  # shrinking evicts nothing
        _scale(api_client, 2)
        wait_until(lambda: _status(api).get("readyReplicas") == 2, timeout=20, message="2 ready")
        assert len(kubelet.pids()) == 2


def test_capacity_must_be_a_whole_number(api_client: k8s.ApiClient) -> None:
    with pytest.raises(ValueError, match=r"^capacity must be None or a whole number >= 0, got -1$"):
        Kubelet(api_client=api_client, capacity=-1)


def _progressing(status: dict[str, Any]) -> tuple[str, str, str]:
    [found] = [c for c in status["conditions"] if c["type"] == "Progressing"]
    return found["status"], found["reason"], found["lastUpdateTime"]


def test_progress_deadline_and_max_unavailable_like_kubernetes() -> None:
    deployment = app_deployment(spec=AppSpec(replicas=4))
    deployment["metadata"]["generation"] = 1
    deployment["spec"]["progressDeadlineSeconds"] = 60
    first = deployment_status(deployment=deployment, ready=2, now=NOW)
    assert _progressing(first) == ("True", "ReplicaSetUpdated", STAMP)
    deployment["status"] = first
    # one more ready 30 s later: progress moves lastUpdateTime, not lastTransitionTime
    later = deployment_status(deployment=deployment, ready=3, now=NOW + timedelta(seconds=30))
    assert _progressing(later) == ("True", "ReplicaSetUpdated", "2026-11-26T12:00:30Z")
    [moved] = [c for c in later["conditions"] if c["type"] == "Progressing"]
    assert moved["lastTransitionTime"] == STAMP
    # 3 of 4 with maxUnavailable 25% (1): available; within the deadline: unchanged
    assert later["conditions"][0]["reason"] == "MinimumReplicasAvailable"
    deployment["status"] = later
    stalled = deployment_status(deployment=deployment, ready=3, now=NOW + timedelta(seconds=90))
    assert stalled == later
    # 61 s after the last progress: ProgressDeadlineExceeded, as kubectl rollout status reports
    gone = deployment_status(deployment=deployment, ready=3, now=NOW + timedelta(seconds=91))
    assert _progressing(gone) == ("False", "ProgressDeadlineExceeded", "2026-11-26T12:01:31Z")
    # Recreate has no maxUnavailable: 3 of 4 is not available
    deployment["spec"]["strategy"] = {"type": "Recreate"}
    recreate = deployment_status(deployment=deployment, ready=3, now=NOW)
    assert recreate["conditions"][0]["reason"] == "MinimumReplicasUnavailable"


def test_a_scale_up_that_never_gets_its_pods_stays_complete_like_kubernetes() -> None:
    """kube's syncRolloutStatus skips progress checks for a completed single-ReplicaSet
    Deployment (isCompleteDeployment): no ReplicaSetUpdated, no ProgressDeadlineExceeded."""
    deployment = app_deployment(spec=AppSpec(replicas=2))
    deployment["metadata"]["generation"] = 1
    deployment["spec"]["progressDeadlineSeconds"] = 600
    deployment["status"] = deployment_status(deployment=deployment, ready=2, now=NOW)
    assert _progressing(deployment["status"]) == ("True", "NewReplicaSetAvailable", STAMP)
    deployment["spec"]["replicas"] = 4  # two more pods, Pending for good
    deployment["metadata"]["generation"] = 2
    for seconds in (1, 601, 3600):
        status = deployment_status(
            deployment=deployment, ready=2, now=NOW + timedelta(seconds=seconds)
        )
        assert _progressing(status) == ("True", "NewReplicaSetAvailable", STAMP)
        assert (status["updatedReplicas"], status["readyReplicas"]) == (4, 2)
        assert status["unavailableReplicas"] == 2
        deployment["status"] = status
