"""The fault matrix end to end (issue 5): one engine run cycles through every fault of its
peers and keeps running, acts on nothing it should not, and says what docs/safety.md says.

Prometheus (through the world's fault proxy): down, slow (beyond the 2 s timeout), NaN,
partial (the app's series dropped). Slack (scripted answers): 429 with Retry-After, 500,
410. Kubernetes (the emulator's injected faults, engine user only): 409 on the record,
403 and 429 (Retry-After) and 503 on the scale, 404 on the Deployment, slow GETs beyond
the client timeout. At the end the request log proves every replica count written was in
[min, max] and no action was applied twice.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from e2e.e2e_engine import DECISION, WORKLOAD, EngineProcess, safety_config
from e2e.e2e_world import (
    assert_scales_bounded_and_once,
    last_seq,
    scale_patches,
    slack_texts,
    wait_slack,
    writes,
)
from sampleapp.profiles import Steady
from sandbox.world import DEPLOYMENT, ENGINE_USER, World

pytestmark = pytest.mark.slow

W = re.escape(WORKLOAD)
MISSING = (
    W + r": rps=n/a \(baseline .*\) p95_latency_seconds=n/a \(baseline .*\) memory_bytes=n/a "
    r"\(baseline .*\); missing, not scored -> none: no data"
)
NO_DATA = "; no data for rps, p95_latency_seconds, memory_bytes"
SUMMARY = r"pass (\d+): 1 workloads, \d+ anomalies, \d+ actions, \d+ errors in "
PROM_FAILED = r"pass \d+: Prometheus query failed, no decisions this pass: "
RECORD_PATH = rf"/deployments/{DEPLOYMENT}$"
SCALE_PATH = rf"/deployments/{DEPLOYMENT}/scale$"
PERMISSION = "patch deployments/scale in apps, namespace aegisops"


def passes_go_on(engine: EngineProcess, *, after: int, count: int = 2) -> None:
    """The process is alive and still completes passes after `after` (a log mark)."""
    engine.wait_lines(SUMMARY, count=count, timeout=30, after=after)
    assert engine.alive()


def test_prometheus_slack_and_kubernetes_faults_in_one_run(
    calm_world: World, engines: list[EngineProcess], tmp_path: Path
) -> None:
    world, mark = calm_world, last_seq(calm_world)
    proxy = world.prom_proxy
    config = safety_config(
        world,
        identity="e2e-faults",
        targets={"max_replicas": 2},
        kubernetes={"timeout_seconds": 2, "recheck_gone_seconds": 3},
        slack={"max_retries": 5, "max_retry_wait_seconds": 10},
    )
    engine = EngineProcess(world=world, config=config, workdir=tmp_path, name="faults")
    engines.append(engine.start())
    engine.wait_lines(DECISION, count=3, timeout=40)

    # -- Prometheus down; Slack answers 429 (Retry-After) twice, then 500, then takes it.
    world.slack.script(429, retry_after=1, times=2)
    world.slack.script(500)
    at = engine.mark()
    proxy.set_mode("down")
    failed = engine.wait_lines(PROM_FAILED, count=3, timeout=60, after=at)
    assert all(f"query rps: Prometheus at {proxy.url}" in line for line in failed), failed
    [down] = wait_slack(world, "AegisOps: Prometheus is unreachable")
    answers = [(r.status, r.json["text"] if r.json else None) for r in world.slack.received()]
    assert [status for status, _ in answers] == [429, 429, 500, 200]
    assert {text for _, text in answers} == {down}  # the same message, kept first in line
    engine.wait_lines(r"Slack answered HTTP 429 rate_limited; retrying in 1 s", timeout=5)
    engine.wait_lines(r'Slack message posted after 3 retries: "AegisOps: Prometheus is', timeout=5)

    # -- Prometheus back; Slack answers 410: that message is dropped, with one log line.
    world.slack.script(410)
    at = engine.mark()
    proxy.set_mode("ok")
    engine.wait_lines(DECISION, count=2, timeout=30, after=at)
    [dropped] = engine.wait_lines(
        r"Slack answered HTTP 410 channel_is_archived; the message is dropped \(not retried\): ",
        timeout=30,
    )
    assert '"AegisOps: Prometheus is back' in dropped
    assert world.slack.received()[-1].status == 410

    # -- Prometheus slow, beyond the engine's 2 s timeout: failed passes, then back.
    at = engine.mark()
    proxy.set_mode("slow", seconds=4)
    slow = engine.wait_lines(PROM_FAILED, count=3, timeout=60, after=at)
    assert all(
        line.endswith(f"query rps: Prometheus at {proxy.url} did not answer within 2 s")
        for line in slow
    ), slow
    passes_go_on(engine, after=at)
    proxy.set_mode("ok")
    wait_slack(world, "AegisOps: Prometheus is unreachable", count=2)
    wait_slack(world, "AegisOps: Prometheus is back", count=1)

    # -- NaN values while traffic surges: no data, so no action and no scoring.
    quiet = last_seq(world)
    at = engine.mark()
    proxy.set_mode("nan")
    world.set_load(Steady(rps=80.0))
    nan_lines = engine.wait_lines(MISSING, count=4, timeout=30, after=at)
    assert all(line.endswith(NO_DATA) for line in nan_lines), nan_lines
    [missing] = wait_slack(world, f"AegisOps: No metrics for {WORKLOAD}: ")

    # -- Partial: the app's series are gone (the others' would stay): the same.
    at = engine.mark()
    proxy.set_mode("partial", deployment=DEPLOYMENT)
    engine.wait_lines(MISSING, count=4, timeout=30, after=at)
    passes_go_on(engine, after=at)
    assert engine.lines(r" -> (scale_up|scale_down|rollback|give_up)", after=0) == []
    assert writes(world, after=quiet) == []  # nothing on missing data, surge or not

    # -- Kubernetes faults on the way to the one scale-up the surge deserves: 409 on the
    # record (re-read, decide again once), 429 with Retry-After and 503 on the scale
    # (backoff; the record put back each time), then success.
    api = world.api
    conflict = api.inject(verb="patch", path=RECORD_PATH, status=409, user=ENGINE_USER)
    limited = api.inject(verb="patch", path=SCALE_PATH, status=429, retry_after=2, user=ENGINE_USER)
    unavailable = api.inject(verb="patch", path=SCALE_PATH, status=503, user=ENGINE_USER)
    at = engine.mark()
    proxy.set_mode("ok")
    wait_slack(world, f"AegisOps: Metrics are back for {WORKLOAD}")
    engine.wait_lines(DECISION + r"scale_up 1->2: ", timeout=90, after=at)
    assert (conflict.fired, limited.fired, unavailable.fired) == (1, 1, 1)
    [raced] = engine.wait_lines(r"scale_up 1->2: record changed meanwhile \(", timeout=5, after=at)
    assert "409 Conflict" in raced and raced.endswith("; re-reading and deciding again"), raced
    limited_line, unavailable_line = engine.wait_lines(
        r"Kubernetes API unavailable \(.*\): no Kubernetes call for \d+s \(backoff\)",
        count=2,
        timeout=5,
        after=at,
    )
    assert "patch deployments/scale aegisops/aegisops-app: 429 " in limited_line
    assert limited_line.endswith("no Kubernetes call for 2s (backoff)")  # its Retry-After
    assert "patch deployments/scale aegisops/aegisops-app: 503 " in unavailable_line
    engine.wait_lines(r"Kubernetes API answers again; backoff over", count=2, timeout=5, after=at)
    engine.wait_lines(
        r"annotations put back; the next pass may try again", count=2, timeout=5, after=at
    )
    assert [e.body for e in scale_patches(world, after=quiet)] == [{"spec": {"replicas": 2}}]

    # The only scale PATCH still to come is the rollback (max 2, and no scale-up after a
    # give_up): it will be refused.
    forbidden = api.inject(verb="patch", path=SCALE_PATH, status=403, user=ENGINE_USER)

    # -- 404: the Deployment's GET (a re-read while the scale-up is verified) answers 404:
    # dropped from the passes, then found again.
    at = engine.mark()
    gone = api.inject(verb="get", path=RECORD_PATH, status=404, user=ENGINE_USER)
    engine.wait_lines(
        r"Deployment not found \(.*\): dropped from the passes, looking again every 3s",
        timeout=20,
        after=at,
    )
    engine.wait_lines(r"Deployment found again; back in the passes", timeout=20, after=at)
    assert gone.fired == 1
    passes_go_on(engine, after=at)

    # -- Slow Kubernetes GETs, beyond the 2 s client timeout: backoff, then over.
    at = engine.mark()
    slow_get = api.inject(verb="get", path=RECORD_PATH, latency=3, times=None, user=ENGINE_USER)
    [timed_out] = engine.wait_lines(
        r"Kubernetes API unavailable \(.*\): no Kubernetes call for \d+s \(backoff\)",
        timeout=30,
        after=at,
    )
    assert "get deployments aegisops/aegisops-app: " in timed_out
    assert "Read timed out" in timed_out, timed_out
    passes_go_on(engine, after=at)
    slow_get.times = slow_get.fired  # disarmed: no further request is delayed
    engine.wait_lines(r"Kubernetes API answers again; backoff over", timeout=60, after=at)

    # -- 403 on the way back: at max replicas and still saturated, the scale-up is judged
    # not helping; its rollback's scale PATCH is refused: the permission is named, the
    # record put back, one alert, and the workload held (no attempt, no read per pass).
    engine.wait_lines(DECISION + r"give_up: ", timeout=40)
    [denied] = engine.wait_lines(r"forbidden: the engine may not ", timeout=40)
    assert forbidden.fired == 1
    assert f"may not {PERMISSION} (grant it in its Role; " in denied
    assert re.search(r"; no action attempt on this workload until \S+$", denied), denied
    [alert] = wait_slack(world, f"AegisOps: AegisOps is not allowed to act on {WORKLOAD}: ")
    assert alert.startswith(
        f"AegisOps: AegisOps is not allowed to act on {WORKLOAD}: the engine may not {PERMISSION}"
    )
    engine.wait_lines(r"annotations put back; the next pass may try again", count=3, timeout=5)
    engine.wait_lines(
        DECISION + r"none: .*rollback 2->1 \(not applied: forbidden, held until \S+\)$",
        count=2,
        timeout=30,
    )
    world.set_load(Steady(rps=10.0))  # a head start for the next test's calm world
    passes_go_on(engine, after=engine.mark())
    assert engine.stop() == 0

    # Every replica count written in [1, 2]; no record applied twice; the one scale-up, and
    # the rollback never applied (refused).
    assert assert_scales_bounded_and_once(world, after=mark, low=1, high=2) == [2]
    faulted = [e for e in writes(world, after=mark) if e.fault]
    assert sorted(e.code for e in faulted) == [403, 409, 429, 503]
    texts = slack_texts(world)
    assert texts.index(down) < texts.index(missing) < texts.index(alert)
