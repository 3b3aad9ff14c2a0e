"""The pure Block Kit builders of aegisops.messages: exact titles, text and blocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aegisops import notify
from aegisops.messages import (
    ALERT_KINDS,
    MetricLine,
    action_message,
    alert_message,
    anomaly_message,
    metric_lines,
    resolved_message,
)

METRICS = (
    MetricLine(metric="rps", value=42.0, baseline=10.0, direction="up"),
    MetricLine(metric="p95_latency_seconds", value=0.85, baseline=0.12, direction="up"),
    MetricLine(metric="memory_bytes", value=150 * 2**20, baseline=148 * 2**20),
)
METRICS_TEXT = (
    "*Metrics vs baseline*\n```"
    "rps 42.00 req/s (baseline 10.00 req/s) ▲ up\n"
    "p95_latency_seconds 850 ms (baseline 120 ms) ▲ up\n"
    "memory_bytes 150.0 MiB (baseline 148.0 MiB)```"
)


def test_metric_lines_zip_values_baseline_and_directions() -> None:
    assert (
        metric_lines(
            values={"rps": 42.0, "p95_latency_seconds": 0.85, "memory_bytes": 150 * 2**20},
            baseline={"rps": 10.0, "p95_latency_seconds": 0.12, "memory_bytes": 148 * 2**20},
            directions={"rps": "up", "p95_latency_seconds": "up"},
        )
        == METRICS
    )


def test_anomaly_message() -> None:
    message = anomaly_message(
        workload="aegisops/aegisops-app", score=0.87, threshold=0.5, metrics=METRICS, dry_run=False
    )
    assert message == {
        "text": "AegisOps: Anomaly on aegisops/aegisops-app: score 0.87 (threshold 0.50)",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": ":rotating_light: Anomaly on aegisops/aegisops-app",
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Workload*\n`aegisops/aegisops-app`"},
                    {"type": "mrkdwn", "text": "*Anomaly score*\n0.87 (threshold 0.50)"},
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": METRICS_TEXT}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "AegisOps"}]},
        ],
    }


def test_action_message_in_dry_run_is_marked() -> None:
    message = action_message(
        workload="aegisops/aegisops-app",
        action="scale_up",
        replicas_before=1,
        replicas_after=2,
        reason="3 anomalous samples in a row; rps up, p95 up",
        score=0.87,
        threshold=0.5,
        metrics=METRICS[:1],
        dry_run=True,
    )
    assert message["text"] == (
        "[DRY-RUN] AegisOps: aegisops/aegisops-app: would have scaled up 1 -> 2 replicas "
        "(3 anomalous samples in a row; rps up, p95 up)"
    )
    assert message["blocks"][0]["text"]["text"] == (
        "[DRY-RUN] :arrow_up: aegisops/aegisops-app: would have scaled up 1 -> 2 replicas"
    )
    assert message["blocks"][1]["fields"] == [
        {"type": "mrkdwn", "text": "*Workload*\n`aegisops/aegisops-app`"},
        {"type": "mrkdwn", "text": "*Action*\nscale_up (dry-run, not applied)"},
        {"type": "mrkdwn", "text": "*Replicas*\n1 → 2"},
        {"type": "mrkdwn", "text": "*Reason*\n3 anomalous samples in a row; rps up, p95 up"},
        {"type": "mrkdwn", "text": "*Anomaly score*\n0.87 (threshold 0.50)"},
    ]
    assert message["blocks"][-1] == {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "*DRY-RUN*: nothing was changed in the cluster · AegisOps"}
        ],
    }


def test_action_message_applied() -> None:
    message = action_message(
        workload="shop/api",
        action="scale_up",
        replicas_before=2,
        replicas_after=3,
        reason="p95 up",
        score=None,
        threshold=None,
        metrics=(),
        dry_run=False,
    )
    assert message["text"] == "AegisOps: shop/api: scaled up 2 -> 3 replicas (p95 up)"
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "context"]
    assert message["blocks"][1]["fields"][1] == {
        "type": "mrkdwn",
        "text": "*Action*\nscale_up (applied)",
    }


def test_resolved_message() -> None:
    message = resolved_message(
        workload="shop/api", duration_seconds=305.4, replicas=3, metrics=(), dry_run=False
    )
    assert message == {
        "text": "AegisOps: Resolved on shop/api after 5 min 5 s",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": ":white_check_mark: Resolved on shop/api",
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Workload*\n`shop/api`"},
                    {"type": "mrkdwn", "text": "*Lasted*\n5 min 5 s"},
                    {"type": "mrkdwn", "text": "*Replicas*\n3"},
                ],
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "AegisOps"}]},
        ],
    }


def test_the_builders_are_still_importable_from_notify() -> None:
    assert notify.action_message is action_message
    assert notify.anomaly_message is anomaly_message
    assert notify.resolved_message is resolved_message
    assert notify.metric_lines is metric_lines
    assert notify.MetricLine is MetricLine


def act(action: str, before: int, after: int, *, dry_run: bool, **hpa: Any) -> dict[str, Any]:
    return action_message(
        workload="shop/api",
        action=action,
        replicas_before=before,
        replicas_after=after,
        reason="why",
        score=None,
        threshold=None,
        metrics=(),
        dry_run=dry_run,
        **hpa,
    )


HPA = {"hpa": "api", "hpa_min_before": 2, "hpa_min_after": 4}
HPA_BACK = {"hpa": "api", "hpa_min_before": 4, "hpa_min_after": 2}


@pytest.mark.parametrize(
    ("action", "before", "after", "hpa", "header", "applied", "dry"),
    [
        ("scale_up", 1, 2, {}, ":arrow_up:", "scaled up 1 -> 2 replicas",
         "would have scaled up 1 -> 2 replicas"),
        ("scale_down", 3, 2, {}, ":arrow_down:", "scaled down 3 -> 2 replicas",
         "would have scaled down 3 -> 2 replicas"),
        ("rollback", 3, 2, {}, ":rewind:", "rolled back 3 -> 2 replicas",
         "would have rolled back 3 -> 2 replicas"),
        ("restart", 2, 2, {}, ":arrows_counterclockwise:",
         "restarted the pods (2 replicas, rollout restart)",
         "would have restarted the pods (2 replicas, rollout restart)"),
        ("hpa_raise", 2, 2, HPA, ":arrow_up:", "raised minReplicas of HPA api 2 -> 4",
         "would have raised minReplicas of HPA api 2 -> 4"),
        ("hpa_restore", 2, 2, HPA_BACK, ":arrow_down:", "restored minReplicas of HPA api 4 -> 2",
         "would have restored minReplicas of HPA api 4 -> 2"),
        ("give_up", 3, 3, {}, ":warning:", "gave up scaling at 3 replicas",
         "would have given up scaling at 3 replicas"),
        ("release", 2, 4, {}, ":raised_hand:", "released it to manual control at 4 replicas",
         "would have released it to manual control at 4 replicas"),
    ],
)  # fmt: skip
def test_action_message_wording(
    action: str,
    before: int,
    after: int,
    hpa: dict[str, Any],
    header: str,
    applied: str,
    dry: str,
) -> None:
    done = act(action, before, after, dry_run=False, **hpa)
    assert done["text"] == f"AegisOps: shop/api: {applied} (why)"
    assert done["blocks"][0]["text"]["text"] == f"{header} shop/api: {applied}"
    would = act(action, before, after, dry_run=True, **hpa)
    assert would["text"] == f"[DRY-RUN] AegisOps: shop/api: {dry} (why)"
    assert would["blocks"][0]["text"]["text"] == f"[DRY-RUN] {header} shop/api: {dry}"


def test_hpa_action_fields_show_min_replicas() -> None:
    fields = act("hpa_raise", 2, 2, dry_run=False, **HPA)["blocks"][1]["fields"]
    assert [f["text"] for f in fields] == [
        "*Workload*\n`shop/api`",
        "*Action*\nhpa_raise (applied)",
        "*Replicas*\n2 → 2",
        "*HPA minReplicas*\n2 → 4",
        "*Reason*\nwhy",
    ]


def test_restart_fields_show_the_replica_count_once() -> None:
    fields = act("restart", 2, 2, dry_run=True)["blocks"][1]["fields"]
    assert [f["text"] for f in fields] == [
        "*Workload*\n`shop/api`",
        "*Action*\nrestart (dry-run, not applied)",
        "*Replicas*\n2",
        "*Reason*\nwhy",
    ]


ALERT_TITLES = {
    "no_scale": ":mag: Not scaling shop/api: scaling would not fix this anomaly",
    "not_helping": ":warning: Scaling did not help shop/api",
    "not_ready": ":hourglass: New pods of shop/api did not become ready",
    "hands_off": ":raised_hand: shop/api replicas changed by hand — AegisOps backs off",
    "at_max": ":no_entry: shop/api is at its maximum replicas",
    "hpa": ":handshake: shop/api is managed by an HPA — AegisOps does not scale it",
    "paused": ":double_vertical_bar: shop/api is paused — AegisOps takes no action",
    "metrics_missing": ":grey_question: No metrics for shop/api",
    "metrics_back": ":white_check_mark: Metrics are back for shop/api",
    "prometheus_down": ":red_circle: Prometheus is unreachable for shop/api",
    "prometheus_back": ":large_green_circle: Prometheus is back for shop/api",
    "action_cap": ":octagonal_sign: Action cap reached — no action on shop/api",
    "forbidden": ":lock: AegisOps is not allowed to act on shop/api",
}
ENGINE_WIDE = {
    "prometheus_down": ":red_circle: Prometheus is unreachable",
    "prometheus_back": ":large_green_circle: Prometheus is back",
    "action_cap": ":octagonal_sign: Action cap reached — actions held back",
    "forbidden": ":lock: AegisOps lacks a Kubernetes permission",
}


def test_every_alert_kind_has_a_title() -> None:
    assert set(ALERT_TITLES) == set(ALERT_KINDS)


@pytest.mark.parametrize("kind", sorted(ALERT_TITLES))
def test_alert_titles_and_text(kind: str) -> None:
    message = alert_message(kind=kind, workload="shop/api", reason="the reason")
    title = ALERT_TITLES[kind]
    assert message["blocks"][0]["text"]["text"] == title
    assert message["text"] == f"AegisOps: {title.split(' ', 1)[1]}: the reason"
    assert message["blocks"][1]["fields"] == [
        {"type": "mrkdwn", "text": "*Workload*\n`shop/api`"},
        {"type": "mrkdwn", "text": "*Reason*\nthe reason"},
    ]


@pytest.mark.parametrize("kind", sorted(ENGINE_WIDE))
def test_engine_wide_alerts_have_no_workload(kind: str) -> None:
    message = alert_message(kind=kind, workload=None, reason="3 passes failed")
    title = ENGINE_WIDE[kind]
    assert message["blocks"][0]["text"]["text"] == title
    assert message["text"] == f"AegisOps: {title.split(' ', 1)[1]}: 3 passes failed"
    assert message["blocks"][1]["fields"] == [
        {"type": "mrkdwn", "text": "*Reason*\n3 passes failed"}
    ]


def test_a_full_alert_with_metrics_in_dry_run() -> None:
    message = alert_message(
        kind="not_helping",
        workload="shop/api",
        reason="p95 still 850 ms after 5 passes (was 900 ms when scaled 1 -> 2)",
        metrics=METRICS[1:2],
        dry_run=True,
    )
    assert message == {
        "text": "[DRY-RUN] AegisOps: Scaling did not help shop/api: "
        "p95 still 850 ms after 5 passes (was 900 ms when scaled 1 -> 2)",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": "[DRY-RUN] :warning: Scaling did not help shop/api",
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Workload*\n`shop/api`"},
                    {
                        "type": "mrkdwn",
                        "text": "*Reason*\np95 still 850 ms after 5 passes "
                        "(was 900 ms when scaled 1 -> 2)",
                    },
                ],
            },
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Metrics vs baseline*\n```"
                    "p95_latency_seconds 850 ms (baseline 120 ms) ▲ up```",
                },
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": "*DRY-RUN*: nothing was changed in the cluster · AegisOps",
                    }
                ],
            },
        ],
    }


def test_alert_input_errors_are_clear() -> None:
    with pytest.raises(ValueError) as unknown:
        alert_message(kind="oops", workload="shop/api", reason="x")
    assert str(unknown.value).startswith("unknown alert kind 'oops'; known: no_scale, not_helping")
    with pytest.raises(ValueError) as missing:
        alert_message(kind="not_helping", workload=None, reason="x")
    assert str(missing.value) == (
        "alert kind 'not_helping' is about one workload: workload is required"
    )


NAN = float("nan")
NAN_METRICS = (MetricLine(metric="rps", value=NAN, baseline=float("inf"), direction="up"),)


def every_payload() -> list[dict[str, Any]]:
    built = [
        alert_message(kind=k, workload="a/b", reason="r", metrics=NAN_METRICS) for k in ALERT_KINDS
    ]
    built += [act(a, 1, 2, dry_run=True, **HPA) for a in ("scale_up", "hpa_raise", "restart")]
    built.append(
        anomaly_message(
            workload="a/b", score=NAN, threshold=0.5, metrics=NAN_METRICS, dry_run=False
        )
    )
    built.append(
        resolved_message(workload="a/b", duration_seconds=NAN, replicas=1, metrics=(), dry_run=True)
    )
    return built


def test_every_payload_has_text_and_blocks_and_is_strict_json() -> None:
    for payload in every_payload():
        assert payload["text"] and payload["blocks"]
        assert json.loads(json.dumps(payload, allow_nan=False)) == payload


def test_values_that_are_not_finite_show_as_na() -> None:
    message = anomaly_message(
        workload="a/b", score=NAN, threshold=0.5, metrics=NAN_METRICS, dry_run=False
    )
    assert message["text"] == "AegisOps: Anomaly on a/b: score n/a (threshold 0.50)"
    assert message["blocks"][2]["text"]["text"] == (
        "*Metrics vs baseline*\n```rps n/a (baseline n/a) ▲ up```"
    )
