"""`aegisops run` as a subprocess against the sandbox: the product's proof.

Order matters inside this module (the session's World): the quiet run first (from a
calm world, no Lease yet), then the surge (which scales the app and leaves a cooldown),
then the RBAC audit over both, then Prometheus going away.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from aegisops.memory import ANNOTATION_KEYS
from e2e.e2e_engine import (
    AEGISOPS,
    DECISION,
    LEASE,
    WORKLOAD,
    EngineProcess,
    engine_config,
    engine_requests,
)
from e2e.e2e_world import SCALE_PATH, last_seq
from sampleapp.profiles import Steady
from sandbox.prometheus import PrometheusServer
from sandbox.world import ENGINE_USER, NAMESPACE, World

pytestmark = pytest.mark.slow

LOAD_UP = r"(rps|p95_latency_seconds) [\d.e+-]+ vs baseline [\d.e+-]+ \(up\)"
SUMMARY = r"pass \d+: 1 workloads, (\d+) anomalies, (\d+) actions, (\d+) errors in "


def start_engine(
    world: World, engines: list[EngineProcess], tmp_path: Path, name: str, **overrides: Any
) -> EngineProcess:
    engine = EngineProcess(
        world=world, config=engine_config(world, **overrides), workdir=tmp_path, name=name
    )
    engines.append(engine.start())
    return engine


def assert_all_allowed(world: World) -> None:
    denied = [(e.verb, e.path, e.code) for e in engine_requests(world) if e.code in (401, 403)]
    assert denied == []


def since(world: World, mark: int, **filters: Any) -> list[Any]:
    """The engine's requests after request `mark` (a seq)."""
    return [e for e in engine_requests(world, **filters) if e.seq > mark]


def test_quiet_run_with_normal_noisy_traffic_takes_no_action(
    calm_world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    world = calm_world
    world.api.clear_requests()
    engine = start_engine(world, engines, tmp_path, "quiet")
    engine.wait_lines(rf"{re.escape(WORKLOAD)}: trained from history: .*, ready", timeout=30)
    scored = engine.wait_lines(DECISION, count=30, timeout=60)
    assert engine.stop() == 0

    assert [line for line in scored if re.search(r" -> scale_(up|down) ", line)] == []
    summaries = [re.search(SUMMARY, line) for line in engine.lines(SUMMARY)]
    assert len(summaries) >= 30
    assert all(m is not None and m.group(2) == "0" and m.group(3) == "0" for m in summaries)
    assert engine_requests(world, verb="patch") == []
    # Alerts for anomalies scaling cannot fix are allowed; an action message is not.
    texts = [m["text"] for m in world.slack.messages()]
    assert [t for t in texts if not t.startswith(f"AegisOps: Anomaly on {WORKLOAD}")] == []
    # Memory is read once, when the workload is first seen: no API call per pass
    # beyond leader election's on its own Lease (created once, renewed, released at exit).
    calls = engine_requests(world)
    assert [(e.verb, e.resource, e.subresource) for e in calls if e.resource != "leases"] == [
        ("get", "deployments", None)
    ]
    leases = [(e.verb, e.name) for e in calls if e.resource == "leases"]
    assert ("create", None) in leases
    assert set(leases) == {("get", LEASE), ("create", None), ("update", LEASE)}, set(leases)
    assert world.replicas() == 1
    assert engine.lines(r"stopping after \d+ passes")


def test_surge_scales_once_then_cooldown_holds_across_a_restart(
    world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    mark = last_seq(world)  # the log keeps the quiet run's calls for the RBAC audit
    world.slack.clear()
    first = start_engine(world, engines, tmp_path, "first")  # verify_passes 60: see the config
    first.wait_lines(DECISION, count=3, timeout=40)

    world.set_load(Steady(rps=80.0))  # 2x one replica's capacity
    [acted] = first.wait_lines(DECISION + r"scale_up 1->2: ", timeout=60)
    assert re.search(LOAD_UP, acted), acted  # load-shaped: traffic and/or latency up

    [patch] = since(world, mark, verb="patch", subresource="scale")
    assert patch.path == SCALE_PATH
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"spec": {"replicas": 2}}
    assert patch.code == 200
    [annotate] = since(world, mark, verb="patch", subresource=None)
    assert annotate.seq < patch.seq  # the action is recorded before it is taken
    notes = annotate.body["metadata"]["annotations"]
    assert notes["aegisops.dev/last-action"] == "scale_up 1->2"
    assert notes["aegisops.dev/original-replicas"] == "1"
    assert notes["aegisops.dev/replicas-set"] == "2"
    assert {k for k, v in notes.items() if v is not None} == {
        "aegisops.dev/last-action",
        "aegisops.dev/last-action-at",
        "aegisops.dev/cooldown-until",
        "aegisops.dev/original-replicas",
        "aegisops.dev/replicas-set",
    }
    assert set(notes) == set(ANNOTATION_KEYS)  # ours not set are cleared (null)
    assert annotate.body["metadata"]["resourceVersion"]
    world.wait_for(lambda: world.replicas() == 2, timeout=30, message="2 live replicas")

    messages = world.slack.messages()
    texts = [m["text"] for m in messages]
    [action] = [m for m in messages if "scaled up" in m["text"]]
    assert action["text"].startswith(f"AegisOps: {WORKLOAD}: scaled up 1 -> 2 replicas (")
    assert re.search(LOAD_UP, action["text"])
    fields = str(action["blocks"])
    assert "1 → 2" in fields and "scale_up (applied)" in fields and "Anomaly score" in fields
    alert = texts[texts.index(action["text"]) - 1]  # the incident is announced first
    assert alert.startswith(f"AegisOps: Anomaly on {WORKLOAD}: score ")

    # The anomaly persists (traffic stays high), the cooldown holds: no second action.
    held = first.wait_lines(DECISION + r"none: .*cooldown until ", count=8, timeout=40)
    assert len(held) >= 8
    assert len(since(world, mark, verb="patch", subresource="scale")) == 1
    assert first.stop() == 0

    # A restarted engine reads the cooldown from the annotations and does not act.
    second = start_engine(world, engines, tmp_path, "second")
    second.wait_lines(DECISION + r"none: .*cooldown until ", count=8, timeout=60)
    assert second.stop() == 0
    assert second.lines(r"scale_up \d->\d") == []
    assert len(since(world, mark, verb="patch", subresource="scale")) == 1
    assert len(since(world, mark, verb="patch")) == 2
    assert world.deployment()["spec"]["replicas"] == 2
    assert [m for m in world.slack.messages() if "scaled up" in m["text"]] == [action]
    assert_all_allowed(world)


def test_every_request_was_allowed_and_every_rule_was_used(world: World) -> None:
    """Least privilege both ways: nothing the engine did was refused, nothing granted idle."""
    assert_all_allowed(world)
    usage = world.api.rbac_rule_usage()
    engine_rules = {
        rule: hits
        for rule, hits in usage.items()
        if (rule.kind, rule.namespace, rule.name) == ("Role", NAMESPACE, "aegisops-engine")
    }
    assert engine_rules, usage
    unused = [rule for rule, hits in engine_rules.items() if not hits]
    assert unused == []
    assert all(e.user == ENGINE_USER for hits in engine_rules.values() for e in hits)


def test_prometheus_down_mid_run_logs_and_keeps_running(
    world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    with PrometheusServer(scrape_interval="1s") as prometheus:
        engine = start_engine(world, engines, tmp_path, "promdown", prometheus_url=prometheus.url)
        engine.wait_lines(SUMMARY, count=2, timeout=30)
        url = prometheus.url
        prometheus.stop()
        [failed] = engine.wait_lines(
            r"pass \d+: Prometheus query failed, no decisions this pass: ", timeout=15
        )
        assert f"query rps: cannot connect to Prometheus at {url}" in failed
    engine.wait_lines(
        r"pass \d+: 1 workloads, 0 anomalies, 0 actions, 1 errors", count=3, timeout=15
    )
    assert engine.proc is not None and engine.proc.poll() is None
    assert engine.stop() == 0


def test_check_against_the_sandbox_is_all_green(world: World, tmp_path: Path) -> None:
    engine = EngineProcess(world=world, config=engine_config(world), workdir=tmp_path, name="c")
    done = subprocess.run(
        [str(AEGISOPS), "check", "--config", str(engine.config_path)],
        capture_output=True,
        text=True,
        env=engine.env,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(line.startswith("[ok]   ") for line in lines), lines
    assert "[ok]   prometheus query rps: 1 series" in lines
    assert "[ok]   kubernetes patch deployments/scale in aegisops" in lines
    assert "[ok]   kubernetes: incluster auth against " + world.api.url in lines
    assert lines[-1] == "[ok]   slack: webhook from $SLACK_WEBHOOK_URL"
