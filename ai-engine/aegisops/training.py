"""Start-up training: each workload's detector learns its baseline from Prometheus history,
so a restarted engine needs no new learning period. One workload's bad history never
stops the others: it learns from live samples instead."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aegisops.detector import DetectorParams, WorkloadDetector
from aegisops.logs import on

if TYPE_CHECKING:
    from aegisops.act import Workload
    from aegisops.prometheus import History

log = logging.getLogger("aegisops.loop")


def train(
    workloads: Mapping[str, Workload], *, history: Mapping[str, History], params: DetectorParams
) -> None:
    """Fit every workload's detector on its history (logged per workload)."""
    needed = params.baseline_samples
    for key, workload in workloads.items():
        past = history.get(key)
        if past is None or len(past.timestamps) == 0:
            log.info("no history, learning from live samples (%d needed)", needed, extra=on(key))
            continue
        try:
            gathered = workload.detector.fit_history(
                timestamps=past.timestamps.tolist(), X=past.X.tolist()
            )
        except Exception as err:  # one workload's history never stops the start
            log.error(
                "cannot train from history (%s: %s), learning from live samples",
                type(err).__name__,
                err,
                extra=on(key),
            )
            workload.detector = WorkloadDetector(params=params)
            continue
        workload.last_t = float(past.timestamps[-1])
        state = "ready" if workload.detector.ready else "still learning"
        log.info(
            "trained from history: %d of %d points usable, %s (baseline %d samples)",
            gathered,
            len(past.timestamps),
            state,
            needed,
            extra=on(key),
        )
