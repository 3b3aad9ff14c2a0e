"""End-to-end helpers: the engine's sandbox config and `aegisops run` as a subprocess.

The world's emulator runs in RBAC mode with kubernetes/rbac.yaml; the engine
authenticates as the service account `aegisops:aegisops-engine` from in-cluster files
(KUBERNETES_SERVICE_HOST/PORT + token + ca.crt), exactly as in a pod. Time is
accelerated through config only: 1 s polls and scrapes, [10s] rate windows, a 60-sample
baseline.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sampleapp.profiles import Diurnal
from sandbox.procs import spawn, stop_process, tail, wait_until
from sandbox.world import DEPLOYMENT, ENGINE_USER, NAMESPACE, World

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "kubernetes" / "rbac.yaml"
AEGISOPS = Path(sys.executable).with_name("aegisops")
WORKLOAD = f"{NAMESPACE}/{DEPLOYMENT}"
RPS = "sum by (namespace, deployment) (rate(http_requests_total[10s]))"
BASELINE_SAMPLES = 60
# Normal traffic with noise: Poisson arrivals around a slow wave, seeded.
NORMAL = Diurnal(rps=10.0, amplitude=0.1, period_seconds=30.0)


def engine_config(world: World, *, prometheus_url: str | None = None) -> dict[str, Any]:
    """The engine's config for the sandbox: accelerated time, in-cluster auth."""
    return {
        "poll_interval_seconds": 1,
        "prometheus": {
            "url": prometheus_url or world.prometheus_url,
            "timeout_seconds": 2,
            "history_lookback_seconds": 600,
            "queries": {
                "rps": RPS,
                "p95_latency_seconds": (
                    "histogram_quantile(0.95, sum by (namespace, deployment, le) "
                    "(rate(http_request_latency_seconds_bucket[10s])))"
                ),
                "memory_bytes": "avg by (namespace, deployment) (process_resident_memory_bytes)",
            },
        },
        "detector": {
            "baseline_samples": BASELINE_SAMPLES,
            "cold_start_seconds": 6,
            "n_estimators": 60,
            "max_samples": 64,
            "seed": 7,
            "threshold_quantile": 0.995,
            "retrain_every_samples": 1000,
            "max_training_samples": 1000,
        },
        # verify_passes 60: the surge test's load saturates even 2 replicas, so a scale-up
        # would be judged "not helping" after the default 5 passes; verification, give_up and
        # rollback are covered in tests/engine/test_act.py
        "policy": {"consecutive_anomalies": 4, "cooldown_seconds": 600, "verify_passes": 60},
        "targets": [
            {
                "namespace": NAMESPACE,
                "deployment": DEPLOYMENT,
                "min_replicas": 1,
                "max_replicas": 4,
                "scale_step": 1,
            }
        ],
        "slack": {"timeout_seconds": 2, "max_retries": 1},
        "kubernetes": {
            "mode": "incluster",
            "serviceaccount_dir": str(world.serviceaccount_dir),
            "timeout_seconds": 5,
        },
        "server": {"port": 0},
        "log": {"format": "text", "level": "info"},
    }


class EngineProcess:
    """`aegisops run` in its own session, output in a log file; stopped by PID."""

    def __init__(self, *, world: World, config: dict[str, Any], workdir: Path, name: str) -> None:
        self.config_path = workdir / f"{name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = workdir / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items() if not _foreign(k)}
        self.env.update(world.incluster_env)
        self.env["SLACK_WEBHOOK_URL"] = world.slack_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        argv = [str(AEGISOPS), "run", "--config", str(self.config_path)]
        self.proc = spawn(argv=argv, log_path=self.log_path, env=self.env)
        return self

    def stop(self) -> int | None:
        """SIGTERM: the engine finishes its pass and exits 0."""
        return None if self.proc is None else stop_process(self.proc, timeout=15)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lines(self, pattern: str) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.text().splitlines() if regex.search(line)]

    def wait_lines(self, pattern: str, *, count: int = 1, timeout: float) -> list[str]:
        """Poll the log until `count` lines match; fail with the log tail if the engine died."""

        def enough() -> list[str] | None:
            assert self.proc is not None
            found = self.lines(pattern)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                pytest.fail(
                    f"engine exited ({self.proc.returncode}) before {count}x {pattern!r}:\n"
                    f"{tail(self.log_path, lines=40)}"
                )
            return None

        try:
            return wait_until(enough, timeout=timeout, interval=0.2, message=repr(pattern))
        except TimeoutError:
            pytest.fail(f"no {count}x {pattern!r} in {timeout}s:\n{tail(self.log_path, lines=40)}")


def _foreign(name: str) -> bool:
    """Settings from the developer's shell that must not leak into the engine under test."""
    return name.startswith(("AEGISOPS_", "KUBERNETES_")) or name in (
        "KUBECONFIG",
        "SLACK_WEBHOOK_URL",
    )


def engine_requests(world: World, **filters: Any) -> list[Any]:
    return world.api.requests(user=ENGINE_USER, **filters)
