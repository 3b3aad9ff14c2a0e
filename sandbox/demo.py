"""`make demo`: AegisOps, unchanged, against the sandbox world, with a traffic surge.

Starts the World (Kubernetes API emulator, Prometheus, one aegisops-app replica, Slack
receiver, load generator), writes an accelerated engine config, runs `aegisops run
--config FILE` as a subprocess (its log lines prefixed `engine |`), and plays:

  learn   normal traffic while the engine builds its baseline
  surge   traffic that overloads one replica: latency climbs, AegisOps should scale
  after   the surge continues on the scaled Deployment: latency recovers

then stops everything and prints a summary: actions (from the API request log),
replicas over time, p95 latency per phase, Slack messages. With SLACK_WEBHOOK_URL set,
the engine posts to that (real) webhook; unset, to the local receiver. The demo only
uses the engine's CLI, config file, logs and /metrics, never its internals.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sampleapp.profiles import Steady
from sandbox.procs import free_port, stop_process
from sandbox.prometheus import PrometheusError
from sandbox.world import DEPLOYMENT, ENGINE_USER, NAMESPACE, AppSpec, World

WORKLOAD = f'namespace="{NAMESPACE}", deployment="{DEPLOYMENT}"'
P95 = (
    "histogram_quantile(0.95, sum by (le) "
    f"(rate(http_request_latency_seconds_bucket{{{WORKLOAD}}}[10s])))"
)
RPS = f"sum(rate(http_requests_total{{{WORKLOAD}}}[10s]))"
LAST_ACTION = "aegisops.dev/last-action"
PASS_LINE = re.compile(r"pass \d+: \d+ workloads, (\d+) anomalies")


@dataclass(frozen=True)
class Plan:
    """The demo's timeline and loads (capacity per replica = workers / service time)."""

    learn_seconds: float = 100.0
    surge_seconds: float = 120.0
    normal_rps: float = 20.0
    surge_rps: float = 60.0
    baseline_samples: int = 60
    cooldown_seconds: int = 60


QUICK = Plan(learn_seconds=60.0, surge_seconds=75.0, baseline_samples=40, cooldown_seconds=45)


@dataclass
class Sample:
    t: float
    phase: str
    replicas: int  # live replicas (processes answering /healthz)
    p95: float | None


@dataclass
class Timeline:
    """What the demo saw, sampled once a second, and the scale changes it noticed."""

    started: float = field(default_factory=time.time)
    phase_at: dict[str, float] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    actions: list[tuple[float, int, int, str]] = field(default_factory=list)  # t, from, to, note
    spec_replicas: int | None = None


def engine_config(*, world: World, plan: Plan, metrics_port: int) -> dict[str, object]:
    """The accelerated engine config (schema: docs/design.md "Config file")."""
    window = "5s"
    return {
        "poll_interval_seconds": 1,
        "dry_run": False,
        "prometheus": {
            "url": world.prometheus_url,
            "timeout_seconds": 2,
            "queries": {
                "rps": f"sum by (namespace, deployment) (rate(http_requests_total[{window}]))",
                "p95_latency_seconds": (
                    "histogram_quantile(0.95, sum by (namespace, deployment, le) "
                    f"(rate(http_request_latency_seconds_bucket[{window}])))"
                ),
                "memory_bytes": (
                    "avg by (namespace, deployment) "
                    '(process_resident_memory_bytes{job!="aegisops-engine"})'
                ),
            },
        },
        "detector": {
            "baseline_samples": plan.baseline_samples,
            "cold_start_seconds": 10,
            "retrain_every_samples": plan.baseline_samples,
            "seed": 42,
        },
        "policy": {
            "consecutive_anomalies": 3,
            "cooldown_seconds": plan.cooldown_seconds,
            # judged 15 s after the new pods are ready: longer than the 5 s rate window
            # plus Prometheus's 5 s target discovery, so a fresh pod's effect is visible
            "verify_passes": 15,
            "verify_ready_seconds": 30,
        },
        "targets": [
            {
                "namespace": NAMESPACE,
                "deployment": DEPLOYMENT,
                "min_replicas": 1,
                "max_replicas": 4,
                "scale_step": 1,
            }
        ],
        "slack": {"webhook_env": "SLACK_WEBHOOK_URL", "timeout_seconds": 5, "max_retries": 2},
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(world.engine_kubeconfig)},
        "server": {"port": metrics_port, "host": "127.0.0.1"},
        "log": {"format": "text", "level": "info"},
    }


def say(prefix: str, line: str) -> None:
    print(f"{prefix:>7} | {line}", flush=True)


class Engine:
    """`aegisops run` as a subprocess whose output is streamed with a prefix."""

    def __init__(self, *, config_path: Path, env: dict[str, str]) -> None:
        binary = Path(sys.executable).parent / "aegisops"
        if not binary.exists():
            found = shutil.which("aegisops")
            if found is None:
                raise RuntimeError("the `aegisops` CLI is not installed: run `make install`")
            binary = Path(found)
        self.proc = subprocess.Popen(
            [str(binary), "run", "--config", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="engine-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            say("engine", line)

    def stop(self) -> int | None:
        code = stop_process(self.proc, timeout=15)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code


def _p95(world: World) -> float | None:
    try:
        value = world.prometheus.scalar(P95)
    except PrometheusError:
        return None
    return None if value is None or math.isnan(value) else value


def observe(*, world: World, timeline: Timeline, phase: str) -> Sample:
    """One look at the world: replicas, p95, and whether spec.replicas changed (an action)."""
    now = time.time()
    deployment = world.deployment()
    spec = int(deployment["spec"].get("replicas", 1))
    if timeline.spec_replicas is not None and spec != timeline.spec_replicas:
        note = deployment["metadata"].get("annotations", {}).get(LAST_ACTION, "")
        timeline.actions.append((now, timeline.spec_replicas, spec, note))
        say("demo", f"spec.replicas {timeline.spec_replicas} -> {spec} ({note or 'no annotation'})")
    timeline.spec_replicas = spec
    sample = Sample(t=now, phase=phase, replicas=world.replicas(), p95=_p95(world))
    timeline.samples.append(sample)
    return sample


def run_phase(
    *, world: World, engine: Engine, timeline: Timeline, name: str, seconds: float
) -> None:
    timeline.phase_at[name] = time.time()
    say("demo", f"--- {name}: {seconds:.0f}s ---")
    deadline = time.monotonic() + seconds
    next_status = 0.0
    while time.monotonic() < deadline:
        if engine.proc.poll() is not None:
            raise RuntimeError(f"the engine exited with code {engine.proc.returncode}")
        tick = time.monotonic()
        sample = observe(world=world, timeline=timeline, phase=name)
        if tick >= next_status:
            rps = world.prometheus.scalar(RPS)
            say(
                "demo",
                f"{name}: replicas={sample.replicas} rps={_fmt(rps, '.1f')} "
                f"p95={_fmt(sample.p95, '.3f')}s",
            )
            next_status = tick + 10
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def _p95_line(label: str, samples: list[Sample]) -> str:
    values = sorted(s.p95 for s in samples if s.p95 is not None)
    if not values:
        return f"p95 {label}: no data"
    median = values[len(values) // 2]
    return f"p95 {label}: median {median:.3f}s, max {values[-1]:.3f}s ({len(values)} samples)"


def summary(*, world: World, engine: Engine, timeline: Timeline) -> list[str]:
    """The lines printed at the end."""
    t0 = timeline.started

    def at(t: float) -> str:
        return f"t+{t - t0:.0f}s ({time.strftime('%H:%M:%S', time.localtime(t))})"

    lines = ["", "===== AegisOps demo summary ====="]
    lines.append("phases: " + ", ".join(f"{n} at {at(t)}" for n, t in timeline.phase_at.items()))
    passes = [PASS_LINE.search(line) for line in engine.lines]
    flagged = sum(int(m.group(1)) for m in passes if m)
    lines.append(f"engine passes: {sum(1 for m in passes if m)}, anomalous samples: {flagged}")
    lines.append(f"actions seen on the Deployment: {len(timeline.actions)}")
    lines += [f"  {at(t)} replicas {a} -> {b}  {note}" for t, a, b, note in timeline.actions]
    patches = world.api.requests(verb="patch", subresource="scale", user=ENGINE_USER)
    lines.append(f"PATCH deployments/scale by {ENGINE_USER}: {len(patches)}")
    lines += [f"  {p.body} -> {p.code}" for p in patches]
    changes, last = [], None
    for sample in timeline.samples:
        if sample.replicas != last:
            changes.append(f"{sample.replicas} at {at(sample.t)}")
            last = sample.replicas
    lines.append("replicas over time: " + " -> ".join(changes))
    learn = [s for s in timeline.samples if s.phase == "learn"]
    first_action = timeline.actions[0][0] if timeline.actions else math.inf
    surge = [s for s in timeline.samples if s.phase == "surge" and s.t < first_action]
    end_from = timeline.samples[-1].t - 30 if timeline.samples else 0.0
    if timeline.actions:
        end_from = max(end_from, first_action)
    after = [s for s in timeline.samples if s.t >= end_from]
    lines.append(_p95_line("before (learning)", learn))
    lines.append(_p95_line("during the surge, before any action", surge))
    lines.append(_p95_line("at the end (last 30 s)", after))
    if os.environ.get("SLACK_WEBHOOK_URL"):
        lines.append("Slack: posted to your webhook (see your channel)")
    else:
        received = world.slack.received()
        lines.append(f"Slack: {len(received)} message(s) received by the local receiver")
        for m in received:
            text = m.json.get("text", "") if isinstance(m.json, dict) else ""
            lines.append(f"  [{m.status} {m.reply}] {text}")
    return lines


def parse_args(argv: Sequence[str] | None) -> tuple[Plan, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.demo",
        description=(
            "Run AegisOps (`aegisops run`) against the local sandbox: learning period, "
            "traffic surge, automatic scale-up, recovery, summary. About 4 minutes "
            "(--quick: about 2.5). SLACK_WEBHOOK_URL set: posts to real Slack."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="shorter phases (~2.5 minutes)")
    parser.add_argument("--verbose", action="store_true", help="also show sandbox debug logs")
    args = parser.parse_args(argv)
    return (QUICK if args.quick else Plan()), args.verbose


def play(*, plan: Plan) -> int:
    timeline = Timeline()
    app = AppSpec(replicas=1, workers=2, service_time_seconds=0.05)
    with World(app=app, load_report=lambda line: say("load", line)) as world:
        say("demo", f"Prometheus {world.prometheus_url}, Kubernetes API {world.api.url}")
        metrics_port = free_port()
        world.prometheus.set_targets(
            "aegisops-engine", [(f"127.0.0.1:{metrics_port}", {"namespace": NAMESPACE})]
        )
        config_path = world.dir / "aegisops.yaml"
        config = engine_config(world=world, plan=plan, metrics_port=metrics_port)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        env = dict(os.environ)
        if not env.get("SLACK_WEBHOOK_URL"):  # set: the engine posts to real Slack
            env["SLACK_WEBHOOK_URL"] = world.slack_url
        world.set_load(Steady(rps=plan.normal_rps))
        engine: Engine | None = None
        try:  # the engine starts inside the try, so no interrupt can orphan it
            engine = Engine(config_path=config_path, env=env)
            run_phase(
                world=world,
                engine=engine,
                timeline=timeline,
                name="learn",
                seconds=plan.learn_seconds,
            )
            world.set_load(Steady(rps=plan.surge_rps))
            run_phase(
                world=world,
                engine=engine,
                timeline=timeline,
                name="surge",
                seconds=plan.surge_seconds,
            )
        finally:
            if engine is not None:
                code = engine.stop()
                say("demo", f"engine stopped (exit code {code})")
                for line in summary(world=world, engine=engine, timeline=timeline):
                    print(line, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    plan, verbose = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format=f"{'sandbox':>7} | %(name)s: %(message)s",
        stream=sys.stdout,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return play(plan=plan)
    except KeyboardInterrupt:
        print("\ninterrupted: everything stopped", flush=True)
        return 130
    except (PrometheusError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
