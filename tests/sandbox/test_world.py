"""The whole sandbox: scaling through the API adds real capacity that Prometheus sees."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

from sampleapp.profiles import Steady
from sandbox.hpa import HPA_USER
from sandbox.procs import pid_alive, stop_process, wait_until
from sandbox.world import DEPLOYMENT, ENGINE_USER, NAMESPACE, AppSpec, World

ROOT = Path(__file__).resolve().parents[2]
UP = f'count(up{{deployment="{DEPLOYMENT}"}} == 1)'
P95 = (
    "histogram_quantile(0.95, sum by (le) "
    f'(rate(http_request_latency_seconds_bucket{{deployment="{DEPLOYMENT}"}}[5s])))'
)


def _value(world: World, promql: str) -> float:
    value = world.prometheus.scalar(promql)
    return math.nan if value is None else value


@pytest.mark.slow
def test_scaling_to_three_replicas_brings_p95_down_under_the_same_overload() -> None:
    # 2 workers x 50 ms = 40 rps per replica; 60 rps overloads one, three cope.
    with World(app=AppSpec(replicas=1, workers=2, service_time_seconds=0.05)) as world:
        world.set_load(Steady(rps=60))
        wait_until(lambda: _value(world, UP) == 1, timeout=20, message="one replica scraped")
        overloaded = wait_until(
            lambda: (p95 := _value(world, P95)) > 1.0 and p95,
            timeout=30,
            message="p95 above 1 s with one replica",
        )
        world.scale(3)
        world.wait_for(lambda: world.replicas() == 3, timeout=20, message="three replicas")
        world.wait_for(lambda: _value(world, UP) == 3, timeout=20, message="three scraped")
        scraped = world.prometheus.query(f'up{{deployment="{DEPLOYMENT}"}}')
        pods = sorted(r.pod for r in world.kubelet.replicas(namespace=NAMESPACE, name=DEPLOYMENT))
        assert sorted(s["metric"]["pod"] for s in scraped) == pods
        assert {s["metric"]["namespace"] for s in scraped} == {NAMESPACE}
        recovered = world.wait_for(
            lambda: (p95 := _value(world, P95)) < 0.2 and p95,
            timeout=60,
            message="p95 under 0.2 s with three replicas",
        )
        assert world.deployment()["status"]["readyReplicas"] == 3
        stats = world.load_stats()
        assert stats is not None and stats.rate_rps == 60 and stats.targets == 3
        print(f"p95 with 1 replica {overloaded:.3f}s, with 3 replicas {recovered:.3f}s")


def test_engine_identity_kubeconfig_and_incluster_files(tmp_path: Path) -> None:
    rbac = tmp_path / "rbac.yaml"
    rbac.write_text(
        f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: engine, namespace: {NAMESPACE}}}
rules:
  - {{apiGroups: [apps], resources: [deployments/scale], verbs: [get]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: engine, namespace: {NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: engine}}
subjects: [{{kind: ServiceAccount, name: aegisops-engine, namespace: {NAMESPACE}}}]
"""
    )
    with World(rbac_files=[rbac]) as world:
        with k8s_config.new_client_from_config(config_file=str(world.engine_kubeconfig)) as c:
            scale = k8s.AppsV1Api(c).read_namespaced_deployment_scale(DEPLOYMENT, NAMESPACE)
            assert scale.spec.replicas == 1
            # Not bound to a name: the exception holds the open connection until it is freed.
            with pytest.raises(ApiException, match=r"^\(403\)\nReason: Forbidden"):
                k8s.AppsV1Api(c).read_namespaced_deployment(DEPLOYMENT, NAMESPACE)
        config = k8s.Configuration()
        InClusterConfigLoader(
            token_filename=str(world.serviceaccount_dir / "token"),
            cert_filename=str(world.serviceaccount_dir / "ca.crt"),
            environ=world.incluster_env,
        ).load_and_set(config)
        with k8s.ApiClient(config) as c:
            scale = k8s.AppsV1Api(c).read_namespaced_deployment_scale(DEPLOYMENT, NAMESPACE)
            assert scale.status.replicas == 1
        assert (world.serviceaccount_dir / "namespace").read_text() == NAMESPACE
        engine_calls = world.api.requests(user=ENGINE_USER)
        assert [(e.verb, e.subresource, e.code) for e in engine_calls] == [
            ("get", "scale", 200),
            ("get", None, 403),
            ("get", "scale", 200),
        ]


def test_slack_and_prometheus_urls_and_teardown_on_exception() -> None:
    world = World()
    before = set(threading.enumerate())  # threads of other fixtures are not this test's
    with pytest.raises(RuntimeError, match="boom"), world:
        assert requests.post(world.slack_url, json={"text": "hi"}, timeout=5).text == "ok"
        assert world.slack_messages() == [{"text": "hi"}]
        assert requests.get(f"{world.prometheus_url}/-/ready", timeout=5).status_code == 200
        world.set_load(Steady(rps=5))
        pids = [world.prometheus.pid, *world.kubelet.pids()]
        assert len(pids) == 2
        raise RuntimeError("boom")
    assert not any(pid_alive(pid) for pid in pids)
    assert not world.dir.exists()
    leftover = {
        "kubelet",
        "kubelet-watch",
        "slack-receiver",
        "kubeapi-serve",
        "loadgen-dispatch",
        "hpa-controller",
        "promproxy",
    }
    started = set(threading.enumerate()) - before
    assert [t.name for t in started if t.name in leftover] == []


def test_capacity_pending_replicas_hpa_bounds_and_the_engines_prometheus_url() -> None:
    with World(capacity=2) as world:
        world.scale(3)
        status = world.wait_for(
            lambda: (s := world.deployment()["status"]).get("readyReplicas") == 2 and s,
            timeout=30,
            message="two of three ready",
        )
        assert (status["replicas"], status["updatedReplicas"], status["unavailableReplicas"]) == (
            3,
            3,
            1,
        )
        assert world.replicas() == 2 and len(world.kubelet.pids()) == 2
        world.wait_for(lambda: _value(world, UP) == 2, timeout=30, message="two scraped")
        assert len(world.prometheus.query(f'up{{deployment="{DEPLOYMENT}"}}')) == 2

        world.set_capacity(3)
        world.wait_for(
            lambda: world.deployment()["status"].get("readyReplicas") == 3,
            timeout=30,
            message="three ready",
        )
        world.wait_for(lambda: _value(world, UP) == 3, timeout=30, message="three scraped")

        # the engine reads through the fault proxy, which starts in mode ok
        assert world.engine_prometheus_url == world.prom_proxy.url != world.prometheus_url
        through = requests.get(
            f"{world.engine_prometheus_url}/api/v1/query", params={"query": UP}, timeout=10
        ).json()
        assert through["data"]["result"][0]["value"][1] == "3"

        created = world.add_hpa(min_replicas=1, max_replicas=2)
        assert created["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": DEPLOYMENT,
        }
        world.wait_for(lambda: world.replicas() == 2, timeout=30, message="HPA clamp to 2")
        scale_writes = world.api.requests(verb="patch", subresource="scale")
        assert [(e.user, e.body) for e in scale_writes][-1] == (
            HPA_USER,
            {"spec": {"replicas": 2}},
        )
        world.wait_for(
            lambda: (
                (st := world.hpa().get("status", {}))
                and (st["currentReplicas"], st["desiredReplicas"]) == (2, 2)
            ),
            timeout=10,
            message="HPA status current 2, desired 2",
        )
        world.delete_hpa()
        assert world.api.objects("horizontalpodautoscalers", NAMESPACE) == []


SCRIPT = """
import sys
from sandbox.world import World
with World() as world:
    print(world.prometheus.pid, *world.kubelet.pids(), flush=True)
    sys.stdin.read()
"""


def test_ctrl_c_stops_every_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == -signal.SIGINT  # died of the Ctrl-C, after cleaning up
    assert stderr.rstrip().endswith("KeyboardInterrupt")
    wait_until(lambda: not any(pid_alive(p) for p in pids), timeout=5, message="all stopped")
