"""End-to-end helpers: the engine's sandbox config and `aegisops run` as a subprocess.

The world's emulator runs in RBAC mode with kubernetes/rbac.yaml (plus the opt-in
kubernetes/examples/rbac-hpa-raise-min.yaml, its own Role); the engine authenticates as
the service account `aegisops:aegisops-engine` from in-cluster files
(KUBERNETES_SERVICE_HOST/PORT + token + ca.crt), exactly as in a pod. Time is
accelerated through config only: 1 s polls and scrapes, [10s] rate windows, a 60-sample
baseline; `safety_config` adds short cooldowns, calm windows, verification and leases.
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
RBAC_HPA_RAISE_MIN = ROOT / "kubernetes" / "examples" / "rbac-hpa-raise-min.yaml"
AEGISOPS = Path(sys.executable).with_name("aegisops")
WORKLOAD = f"{NAMESPACE}/{DEPLOYMENT}"
RPS = "sum by (namespace, deployment) (rate(http_requests_total[10s]))"
P95 = (
    "histogram_quantile(0.95, sum by (namespace, deployment, le) "
    "(rate(http_request_latency_seconds_bucket[10s])))"
)
BASELINE_SAMPLES = 60
# One decision line of the engine for the sandbox workload, up to what it decided.
DECISION = re.escape(WORKLOAD) + r": rps=.*; score \d\.\d\d vs threshold \d\.\d\d -> "
# Normal traffic with noise: Poisson arrivals around a slow wave, seeded.
NORMAL = Diurnal(rps=10.0, amplitude=0.1, period_seconds=30.0)
LEASE = "aegisops-engine"


def engine_config(
    world: World, *, prometheus_url: str | None = None, **sections: dict[str, Any]
) -> dict[str, Any]:
    """The engine's config for the sandbox: accelerated time, in-cluster auth.

    `sections` are merged into the sections of the same name (`policy={...}`), one level
    deep; `targets` replaces the target's keys given.
    """
    config = _base_config(world, prometheus_url=prometheus_url)
    for section, values in sections.items():
        if section == "targets":
            config["targets"][0].update(values)
        elif isinstance(config.get(section), dict):
            config[section].update(values)
        else:
            config[section] = values
    return config


def safety_config(world: World, *, identity: str, **sections: dict[str, Any]) -> dict[str, Any]:
    """Accelerated issue-5 settings: 10 s cooldown, 6 s calm window, 6 s / 5 passes of
    verification, a 4 s lease renewed every second, Prometheus through the fault proxy."""
    policy = {
        "consecutive_anomalies": 4,
        "cooldown_seconds": 10,
        "scale_down_after_seconds": 6,
        "verify_ready_seconds": 6,
        "verify_passes": 5,
        **sections.pop("policy", {}),
    }
    leader = {
        "identity": identity,
        "lease_duration_seconds": 4,
        "renew_every_seconds": 1,
        **sections.pop("leader_election", {}),
    }
    return engine_config(
        world,
        prometheus_url=world.engine_prometheus_url,
        policy=policy,
        leader_election=leader,
        alerts={"missing_after_passes": 3},
        **sections,
    )


def _base_config(world: World, *, prometheus_url: str | None) -> dict[str, Any]:
    return {
        "poll_interval_seconds": 1,
        "prometheus": {
            "url": prometheus_url or world.prometheus_url,
            "timeout_seconds": 2,
            # the whole life of the (session's) world: the baseline is its first samples
            "history_lookback_seconds": 1800,
            "queries": {
                "rps": RPS,
                "p95_latency_seconds": P95,
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
            # The session's world lives through many incidents in minutes: none of them is a
            # new normal (the level-shift adaptation is unit-tested, not proven here).
            "adapt_after_samples": 100_000,
        },
        # verify_passes 60: the surge test's load saturates even 2 replicas, so a scale-up
        # would be judged "not helping" after the default 5 passes; verification, give_up and
        # rollback are covered in tests/engine/test_act.py and tests/e2e/test_safety_e2e.py
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
    """`aegisops run` in its own session, output in a log file; stopped by PID.

    `serviceaccount_dir`: another identity's in-cluster files (default: the world's
    `aegisops-engine`)."""

    def __init__(
        self,
        *,
        world: World,
        config: dict[str, Any],
        workdir: Path,
        name: str,
        serviceaccount_dir: Path | None = None,
    ) -> None:
        if serviceaccount_dir is not None:
            config = {**config, "kubernetes": {**config["kubernetes"]}}
            config["kubernetes"]["serviceaccount_dir"] = str(serviceaccount_dir)
        self.name = name
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

    def kill(self) -> int:
        """SIGKILL by PID: no pass finished, no lease released, no outbox flushed."""
        assert self.proc is not None
        self.proc.kill()
        return self.proc.wait(timeout=10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mark(self) -> int:
        """The number of log lines so far: `lines(..., after=mark)` sees only newer ones."""
        return len(self.text().splitlines())

    def lines(self, pattern: str, *, after: int = 0) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.text().splitlines()[after:] if regex.search(line)]

    def wait_lines(
        self, pattern: str, *, count: int = 1, timeout: float, after: int = 0
    ) -> list[str]:
        """Poll the log until `count` lines match; fail with the log tail if the engine died."""

        def enough() -> list[str] | None:
            assert self.proc is not None
            found = self.lines(pattern, after=after)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{self.name} exited ({self.proc.returncode}) before {count}x {pattern!r}:\n"
                    f"{tail(self.log_path, lines=40)}"
                )
            return None

        try:
            return wait_until(enough, timeout=timeout, interval=0.2, message=repr(pattern))
        except TimeoutError:
            pytest.fail(
                f"{self.name}: no {count}x {pattern!r} in {timeout}s:\n"
                f"{tail(self.log_path, lines=40)}"
            )


def _foreign(name: str) -> bool:
    """Settings from the developer's shell that must not leak into the engine under test."""
    return name.startswith(("AEGISOPS_", "KUBERNETES_")) or name in (
        "KUBECONFIG",
        "SLACK_WEBHOOK_URL",
    )


def engine_requests(world: World, **filters: Any) -> list[Any]:
    return world.api.requests(user=ENGINE_USER, **filters)
