"""The engine's only Prometheus edge: one instant query per metric per pass, history at start.

Every series is mapped to a workload `namespace/deployment` through the configured label
names. A target with no series, a NaN/Inf value, or more than one series (the query does
not aggregate by the workload labels) gets NaN for that metric and a `Gap` saying why.
Only the targets' series are read: other workloads' series, duplicated or not, never fail
a pass. The URL's userinfo (`user:password@`) is masked in every message. Every call has a
timeout and there are no hidden retries (the client's default urllib3 Retry is replaced):
a dead Prometheus fails the pass at once, the next pass tries again. Errors are
`PrometheusUnavailable` (cannot connect, timeout, 5xx) or `PrometheusBadResponse` (not
JSON, error status, unexpected shape); neither is retried here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util import Retry

from aegisops.config import PrometheusConfig, mask_url
from aegisops.detector import METRICS

MAX_POINTS_PER_QUERY = 10_000  # Prometheus refuses more than 11,000 points per series
DUPLICATE = "duplicate series"


class PrometheusError(Exception):
    """Base of the Prometheus edge's errors."""


class PrometheusUnavailable(PrometheusError):
    """Prometheus could not be reached, did not answer in time, or answered 5xx."""


class PrometheusBadResponse(PrometheusError):
    """Prometheus answered, but not with a usable result (not JSON, error, wrong shape)."""


@dataclass(frozen=True)
class Gap:
    """A metric with no usable value for a workload in one sample, and why."""

    key: str
    metric: str
    reason: str  # "no series" | "duplicate series" | "NaN" | "+Inf" | "-Inf"


@dataclass(frozen=True)
class Sample:
    """One pass's values: per target key a vector in `METRICS` order (NaN where missing)."""

    t: float
    values: Mapping[str, np.ndarray]
    gaps: tuple[Gap, ...] = ()

    def missing(self, key: str) -> tuple[str, ...]:
        """The metrics of `key` that had no usable value (with the reason when it is not
        simply "no series" or a NaN, e.g. `rps (duplicate series)`)."""
        return tuple(
            f"{gap.metric} ({gap.reason})" if gap.reason == DUPLICATE else gap.metric
            for gap in self.gaps
            if gap.key == key
        )


@dataclass(frozen=True)
class _Vector:
    """One instant query: the targets' values, the targets with more than one series, and
    how many workload (labelled) and other (unlabelled) series came back."""

    values: dict[str, float]
    duplicates: set[str]
    labelled: int
    unlabelled: int


class History(NamedTuple):
    """A workload's past samples: timestamps (n,) and X (n, len(METRICS)), NaN for gaps."""

    timestamps: np.ndarray
    X: np.ndarray


@dataclass(frozen=True)
class Check:
    """One line of `aegisops check`."""

    name: str
    ok: bool
    detail: str


class PrometheusSource:
    """Samples the configured queries for a fixed set of workload keys (`namespace/name`)."""

    def __init__(self, *, config: PrometheusConfig, targets: Iterable[str]) -> None:
        self.config = config
        self.targets = tuple(targets)
        self._url = mask_url(config.url)
        self._last: requests.Response | None = None
        session = requests.Session()
        session.hooks["response"].append(self._remember)
        self._client = PrometheusConnect(
            url=config.url,
            session=session,
            retry=Retry(total=0, read=False, redirect=False),  # no hidden retries
            timeout=config.timeout_seconds,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PrometheusSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- queries -------------------------------------------------------------------------

    def sample(self, now: float) -> Sample:
        """Evaluate each query once at `now`; map the series onto the targets."""
        values = {key: np.full(len(METRICS), np.nan) for key in self.targets}
        gaps: list[Gap] = []
        for column, (metric, promql) in enumerate(self.config.queries.in_order()):
            found = self._instant(metric, promql, now)
            for key in self.targets:
                value = found.values.get(key)
                if key in found.duplicates:
                    gaps.append(Gap(key=key, metric=metric, reason=DUPLICATE))
                elif value is None:
                    gaps.append(Gap(key=key, metric=metric, reason="no series"))
                elif not math.isfinite(value):
                    gaps.append(Gap(key=key, metric=metric, reason=_non_finite(value)))
                else:
                    values[key][column] = value
        return Sample(t=now, values=values, gaps=tuple(gaps))

    def history(
        self, *, start: float, end: float, step: float, max_points: int = MAX_POINTS_PER_QUERY
    ) -> dict[str, History]:
        """query_range for each metric, aligned per target by timestamp (NaN for gaps).

        A target with no history at all gets empty arrays. Windows of more than
        `max_points` steps are fetched in chunks. Times are whole seconds (the client
        rounds them), so pass integer `start`/`end` for an exact grid.
        """
        if step <= 0 or end < start:
            raise ValueError(f"history: need start <= end and step > 0, got {start}, {end}, {step}")
        columns: list[dict[str, dict[float, float]]] = []
        for metric, promql in self.config.queries.in_order():
            merged: dict[str, dict[float, float]] = {}
            for chunk_start, chunk_end in _chunks(start, end, step, max_points):
                for key, points in self._range(
                    metric, promql, chunk_start, chunk_end, step
                ).items():
                    merged.setdefault(key, {}).update(points)
            columns.append(merged)
        return {key: _align([column.get(key, {}) for column in columns]) for key in self.targets}

    def check(self, *, now: float) -> list[Check]:
        """Prometheus reachable, and each query returns a series for each target.

        The first line is reachability; when Prometheus cannot be reached it is the only one.
        """
        reachable = Check(name="prometheus", ok=True, detail=f"reachable at {self._url}")
        checks: list[Check] = []
        for metric, promql in self.config.queries.in_order():
            try:
                found = self._instant(metric, promql, now)
            except PrometheusUnavailable as err:
                return [Check(name="prometheus", ok=False, detail=str(err))]
            except PrometheusBadResponse as err:
                checks.append(Check(name=f"query {metric}", ok=False, detail=str(err)))
                continue
            values, dups = found.values, found.duplicates
            missing = [key for key in self.targets if key not in values and key not in dups]
            nan = [key for key in self.targets if key in values and not math.isfinite(values[key])]
            detail = f"{found.labelled} series"
            if found.unlabelled and not found.labelled:
                detail = (
                    f"{found.unlabelled} series, but they lack the workload labels "
                    f"{self._label_names('/')}"
                )
            if missing:
                detail += "; no series for " + ", ".join(missing)
            if dups:
                detail += (
                    f"; more than one series for {', '.join(sorted(dups))}: aggregate it by "
                    f"the workload labels ({self._label_names()})"
                )
            if nan:
                detail += "; no value right now (NaN: no traffic?) for " + ", ".join(nan)
            ok = not missing and not dups
            checks.append(Check(name=f"query {metric}", ok=ok, detail=detail))
        return [reachable, *checks]

    # -- HTTP ----------------------------------------------------------------------------

    def _instant(self, metric: str, promql: str, now: float) -> _Vector:
        """The targets' values; a target with more than one series is a duplicate, not a value."""
        params = {"time": f"{now:.3f}", "timeout": str(self.config.timeout_seconds)}
        result = self._call(
            f"query {metric}", "vector", lambda: self._client.custom_query(promql, params=params)
        )
        keys = [self._key(metric, series) for series in result]
        counted = Counter(key for key in keys if key is not None)
        wanted = set(self.targets)
        found = _Vector(
            values={},
            duplicates={k for k, n in counted.items() if n > 1 and k in wanted},
            labelled=len(counted),
            unlabelled=keys.count(None),
        )
        for key, series in zip(keys, result, strict=True):
            if key in wanted and key not in found.duplicates:
                found.values[key] = _number(metric, _pair(metric, series.get("value")))[1]
        return found

    def _range(
        self, metric: str, promql: str, start: float, end: float, step: float
    ) -> dict[str, dict[float, float]]:
        def call() -> Any:
            return self._client.custom_query_range(
                promql,
                start_time=datetime.fromtimestamp(start, tz=UTC),
                end_time=datetime.fromtimestamp(end, tz=UTC),
                step=f"{step:g}",
                params={"timeout": str(self.config.timeout_seconds)},
            )

        result = self._call(f"query_range {metric}", "matrix", call)
        keys = [self._key(metric, series) for series in result]
        counted = Counter(keys)
        series_by_key: dict[str, dict[float, float]] = {}
        for key, series in zip(keys, result, strict=True):
            if key not in self.targets or counted[key] > 1:
                continue  # not a target, or ambiguous: a gap, as in `sample`
            points = series.get("values")
            if not isinstance(points, list):
                raise PrometheusBadResponse(f"query_range {metric}: a series without 'values'")
            series_by_key.setdefault(key, {}).update(
                _number(metric, _pair(metric, point)) for point in points
            )
        return series_by_key

    def _call(self, what: str, result_type: str, call: Callable[[], Any]) -> list[dict[str, Any]]:
        """Run one client call; turn every failure into one of our two errors."""
        self._last = None
        where = f"Prometheus at {self._url}"
        try:
            call()
        except requests.Timeout:
            raise PrometheusUnavailable(
                f"{what}: {where} did not answer within {self.config.timeout_seconds:g} s"
            ) from None
        except requests.JSONDecodeError:
            raise PrometheusBadResponse(
                f"{what}: {where} answered with something not JSON"
            ) from None
        except requests.ConnectionError:
            raise PrometheusUnavailable(f"{what}: cannot connect to {where}") from None
        except requests.RequestException as err:
            raise PrometheusUnavailable(f"{what}: {where}: {type(err).__name__}") from None
        except PrometheusApiClientException:
            pass  # non-200: classified below from the response itself
        except (KeyError, TypeError):
            pass  # 200 without data.result: reported below
        return self._result(what, where, result_type)

    def _result(self, what: str, where: str, result_type: str) -> list[dict[str, Any]]:
        response = self._last
        if response is None:
            raise PrometheusBadResponse(f"{what}: {where} gave no response")
        if response.status_code >= 500:
            raise PrometheusUnavailable(
                f"{what}: {where} answered HTTP {response.status_code}{_error_text(response)}"
            )
        try:
            body = response.json()
        except ValueError:
            raise PrometheusBadResponse(
                f"{what}: {where} answered HTTP {response.status_code} with something not JSON"
            ) from None
        if response.status_code != 200 or not isinstance(body, dict):
            raise PrometheusBadResponse(
                f"{what}: {where} answered HTTP {response.status_code}{_error_text(response)}"
            )
        if body.get("status") != "success":
            raise PrometheusBadResponse(
                f"{what}: {where} answered status {body.get('status')!r}{_error_text(response)}"
            )
        data = body.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("result"), list):
            raise PrometheusBadResponse(f"{what}: {where} answered without data.result")
        if data.get("resultType") != result_type:
            raise PrometheusBadResponse(
                f"{what}: expected a {result_type} result, got {data.get('resultType')!r}"
            )
        result: list[dict[str, Any]] = [s for s in data["result"] if isinstance(s, dict)]
        if len(result) != len(data["result"]):
            raise PrometheusBadResponse(f"{what}: {where} answered a malformed {result_type}")
        return result

    def _remember(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self._last = response

    def _key(self, metric: str, series: Mapping[str, Any]) -> str | None:
        labels = series.get("metric")
        if not isinstance(labels, dict):
            raise PrometheusBadResponse(f"query {metric}: a series without labels")
        names = self.config.workload_labels
        namespace, deployment = labels.get(names.namespace), labels.get(names.deployment)
        if not namespace or not deployment:
            return None  # not a workload series (e.g. Prometheus' own memory)
        return f"{namespace}/{deployment}"

    def _label_names(self, sep: str = ", ") -> str:
        names = self.config.workload_labels
        return f"{names.namespace}{sep}{names.deployment}"


def _pair(metric: str, point: Any) -> Sequence[Any]:
    if not isinstance(point, list | tuple) or len(point) != 2:
        raise PrometheusBadResponse(f"query {metric}: a sample is not [timestamp, value]")
    return point


def _number(metric: str, point: Sequence[Any]) -> tuple[float, float]:
    try:
        return float(point[0]), float(point[1])  # "NaN", "+Inf" parse as floats
    except (TypeError, ValueError):
        raise PrometheusBadResponse(
            f"query {metric}: sample value {point[1]!r} is not a number"
        ) from None


def _non_finite(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _error_text(response: requests.Response) -> str:
    """Prometheus' own `errorType: error` when the body carries one."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict) and body.get("error"):
        return f" ({body.get('errorType', 'error')}: {body['error']})"
    return ""


def _chunks(start: float, end: float, step: float, max_points: int) -> list[tuple[float, float]]:
    span = step * (max(max_points, 1) - 1)
    chunks = []
    chunk_start = start
    while True:
        chunk_end = min(end, chunk_start + span)
        chunks.append((chunk_start, chunk_end))
        if chunk_end >= end:
            return chunks
        chunk_start = chunk_end + step


def _align(columns: list[dict[float, float]]) -> History:
    """Columns of {timestamp: value} -> sorted timestamps and X with NaN where absent."""
    stamps = sorted(set().union(*columns))
    X = np.full((len(stamps), len(columns)), np.nan)
    row = {t: i for i, t in enumerate(stamps)}
    for j, column in enumerate(columns):
        for t, value in column.items():
            X[row[t], j] = value if math.isfinite(value) else np.nan
    return History(timestamps=np.asarray(stamps, dtype=float), X=X)
