"""Slack Block Kit messages: pure builders, plain values in, a payload out.

Every payload has a `text` fallback (what notifications and screen readers show) and
`blocks`, and passes `json.dumps(allow_nan=False)`: metric values that are not finite are
shown as "n/a". In dry-run the header and the text start with `[DRY-RUN]`, the context line
says nothing was changed, and an action reads "would have scaled up ...".

- `anomaly_message`: an anomaly was confirmed.
- `action_message`: AegisOps acted (scale_up, scale_down, rollback, restart, hpa_raise,
  hpa_restore, give_up, release) or, in dry-run, would have.
- `resolved_message`: the anomaly is over.
- `alert_message`: something people should know that is not an action (see `ALERT_KINDS`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HEADER_LIMIT = 150  # Slack's limit for a header's plain text
FIELD_LIMIT = 2000  # Slack's limit for one section field

# alert kind -> (icon, title with the workload as {w}, engine-wide title or None when the
# kind is always about one workload)
ALERT_KINDS: dict[str, tuple[str, str, str | None]] = {
    "no_scale": (":mag:", "Not scaling {w}: scaling would not fix this anomaly", None),
    "not_helping": (":warning:", "Scaling did not help {w}", None),
    "not_ready": (":hourglass:", "New pods of {w} did not become ready", None),
    "hands_off": (":raised_hand:", "{w} replicas changed by hand — AegisOps backs off", None),
    "at_max": (":no_entry:", "{w} is at its maximum replicas", None),
    "hpa": (":handshake:", "{w} is managed by an HPA — AegisOps does not scale it", None),
    "paused": (":double_vertical_bar:", "{w} is paused — AegisOps takes no action", None),
    "metrics_missing": (":grey_question:", "No metrics for {w}", None),
    "metrics_back": (":white_check_mark:", "Metrics are back for {w}", None),
    "prometheus_down": (
        ":red_circle:",
        "Prometheus is unreachable for {w}",
        "Prometheus is unreachable",
    ),
    "prometheus_back": (":large_green_circle:", "Prometheus is back for {w}", "Prometheus is back"),
    "action_cap": (
        ":octagonal_sign:",
        "Action cap reached — no action on {w}",
        "Action cap reached — actions held back",
    ),
    "forbidden": (
        ":lock:",
        "AegisOps is not allowed to act on {w}",
        "AegisOps lacks a Kubernetes permission",
    ),
}

# action -> (icon, past tense, past participle for "would have ...")
_ACTIONS: dict[str, tuple[str, str, str]] = {
    "scale_up": (":arrow_up:", "scaled up", "scaled up"),
    "scale_down": (":arrow_down:", "scaled down", "scaled down"),
    "rollback": (":rewind:", "rolled back", "rolled back"),
    "restart": (":arrows_counterclockwise:", "restarted", "restarted"),
    "hpa_raise": (":arrow_up:", "raised", "raised"),
    "hpa_restore": (":arrow_down:", "restored", "restored"),
    "give_up": (":warning:", "gave up scaling", "given up scaling"),
    "release": (":raised_hand:", "released", "released"),
}


@dataclass(frozen=True)
class MetricLine:
    """One metric as seen now vs its baseline; direction "up"/"down" when it deviates."""

    metric: str
    value: float
    baseline: float | None = None
    direction: str | None = None


def metric_lines(
    *,
    values: Mapping[str, float],
    baseline: Mapping[str, float],
    directions: Mapping[str, str],
) -> tuple[MetricLine, ...]:
    """Zip an observation's values, baseline and deviation directions into lines."""
    return tuple(
        MetricLine(
            metric=metric,
            value=value,
            baseline=baseline.get(metric),
            direction=directions.get(metric),
        )
        for metric, value in values.items()
    )


def format_value(metric: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    if metric.endswith("_seconds"):
        return f"{value * 1000:.0f} ms"
    if metric.endswith("_bytes"):
        return f"{value / 2**20:.1f} MiB"
    if metric == "rps":
        return f"{value:.2f} req/s"
    return f"{value:g}"


def describe_metrics(lines: Iterable[MetricLine]) -> str:
    """`rps 42.00 req/s (baseline 10.00 req/s) ▲ up`, one metric per line."""
    out = []
    for line in lines:
        text = f"{line.metric} {format_value(line.metric, line.value)}"
        if line.baseline is not None:
            text += f" (baseline {format_value(line.metric, line.baseline)})"
        if line.direction == "up":
            text += " ▲ up"
        elif line.direction == "down":
            text += " ▼ down"
        out.append(text)
    return "\n".join(out)


def anomaly_message(
    *,
    workload: str,
    score: float,
    threshold: float,
    metrics: Sequence[MetricLine],
    dry_run: bool,
) -> dict[str, Any]:
    """An anomaly was confirmed on `workload`."""
    summary = f"Anomaly on {workload}: score {_num(score)} (threshold {_num(threshold)})"
    fields = {
        "Workload": f"`{workload}`",
        "Anomaly score": f"{_num(score)} (threshold {_num(threshold)})",
    }
    return _message(
        title=f":rotating_light: Anomaly on {workload}",
        summary=summary,
        fields=fields,
        metrics=metrics,
        dry_run=dry_run,
    )


def action_message(
    *,
    workload: str,
    action: str,
    replicas_before: int,
    replicas_after: int,
    reason: str,
    score: float | None,
    threshold: float | None,
    metrics: Sequence[MetricLine],
    dry_run: bool,
    hpa: str | None = None,
    hpa_min_before: int | None = None,
    hpa_min_after: int | None = None,
) -> dict[str, Any]:
    """AegisOps acted (or, in dry-run, would have acted) on `workload`.

    `hpa`, `hpa_min_before`, `hpa_min_after`: the HPA and its minReplicas, for hpa_raise and
    hpa_restore. An action not in the table is shown by its name.
    """
    icon, past, participle = _ACTIONS.get(action, (":gear:", action.replace("_", " "), ""))
    what = _what(action, replicas_before, replicas_after, hpa, hpa_min_before, hpa_min_after)
    done = f"would have {participle or past} {what}" if dry_run else f"{past} {what}"
    fields = {
        "Workload": f"`{workload}`",
        "Action": f"{action} ({'dry-run, not applied' if dry_run else 'applied'})",
        "Replicas": f"{replicas_before} → {replicas_after}",
    }
    if action == "restart":
        fields["Replicas"] = str(replicas_after)
    if action in ("hpa_raise", "hpa_restore"):
        fields["HPA minReplicas"] = f"{_opt(hpa_min_before)} → {_opt(hpa_min_after)}"
    fields["Reason"] = reason
    if score is not None and threshold is not None:
        fields["Anomaly score"] = f"{_num(score)} (threshold {_num(threshold)})"
    return _message(
        title=f"{icon} {workload}: {done}",
        summary=f"{workload}: {done} ({reason})",
        fields=fields,
        metrics=metrics,
        dry_run=dry_run,
    )


def _what(
    action: str,
    before: int,
    after: int,
    hpa: str | None,
    min_before: int | None,
    min_after: int | None,
) -> str:
    """The object of the verb: `1 -> 2 replicas`, `minReplicas of HPA api 2 -> 4`..."""
    if action in ("hpa_raise", "hpa_restore"):
        name = f"HPA {hpa}" if hpa else "the HPA"
        return f"minReplicas of {name} {_opt(min_before)} -> {_opt(min_after)}"
    if action == "restart":
        return f"the pods ({after} replicas, rollout restart)"
    if action == "give_up":
        return f"at {after} replicas"
    if action == "release":
        return f"it to manual control at {after} replicas"
    return f"{before} -> {after} replicas"


def resolved_message(
    *,
    workload: str,
    duration_seconds: float | None,
    replicas: int | None,
    metrics: Sequence[MetricLine],
    dry_run: bool,
) -> dict[str, Any]:
    """The anomaly on `workload` is over."""
    fields = {"Workload": f"`{workload}`"}
    if duration_seconds is not None:
        fields["Lasted"] = _duration(duration_seconds)
    if replicas is not None:
        fields["Replicas"] = str(replicas)
    lasted = f" after {_duration(duration_seconds)}" if duration_seconds is not None else ""
    return _message(
        title=f":white_check_mark: Resolved on {workload}",
        summary=f"Resolved on {workload}{lasted}",
        fields=fields,
        metrics=metrics,
        dry_run=dry_run,
    )


def alert_message(
    *,
    kind: str,
    workload: str | None,
    reason: str,
    metrics: Sequence[MetricLine] = (),
    dry_run: bool = False,
) -> dict[str, Any]:
    """An alert of `kind` (see `ALERT_KINDS`); `workload` None: about the whole engine."""
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown alert kind {kind!r}; known: {', '.join(ALERT_KINDS)}")
    icon, per_workload, engine_wide = ALERT_KINDS[kind]
    if workload is None and engine_wide is None:
        raise ValueError(f"alert kind {kind!r} is about one workload: workload is required")
    title = per_workload.format(w=workload) if workload is not None else str(engine_wide)
    fields = {"Workload": f"`{workload}`"} if workload is not None else {}
    fields["Reason"] = reason
    return _message(
        title=f"{icon} {title}",
        summary=f"{title}: {reason}",
        fields=fields,
        metrics=metrics,
        dry_run=dry_run,
    )


def _message(
    *,
    title: str,
    summary: str,
    fields: Mapping[str, str],
    metrics: Sequence[MetricLine],
    dry_run: bool,
) -> dict[str, Any]:
    marker = "[DRY-RUN] " if dry_run else ""
    field_blocks = [
        {"type": "mrkdwn", "text": f"*{k}*\n{v}"[:FIELD_LIMIT]} for k, v in fields.items()
    ]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": (marker + title)[:HEADER_LIMIT], "emoji": True},
        },
        {"type": "section", "fields": field_blocks},
    ]
    if metrics:
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": "*Metrics vs baseline*\n```" + describe_metrics(metrics) + "```",
                },
            }
        )
    context = "AegisOps"
    if dry_run:
        context = "*DRY-RUN*: nothing was changed in the cluster · AegisOps"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": f"{marker}AegisOps: {summary}", "blocks": blocks}


def _num(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


def _opt(value: int | None) -> str:
    return "?" if value is None else str(value)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "n/a"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
