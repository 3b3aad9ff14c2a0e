"""The sample app's Prometheus metrics, on their own registry.

Exactly what the engine queries: `http_requests_total`, `http_request_latency_seconds`
and the process collector's `process_resident_memory_bytes` (plus its other
`process_*` gauges, which come with it).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector

# Roughly geometric (x1.33-x1.67 per step) from 5 ms to 10 s: 21 finite buckets, so
# histogram_quantile(0.95, ...) is within a few tens of percent anywhere in that range.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
)


@dataclass(frozen=True)
class AppMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram


def build_metrics() -> AppMetrics:
    """A fresh registry holding the request counter, the latency histogram and the
    process collector."""
    registry = CollectorRegistry()
    requests = Counter(
        "http_requests_total",
        "HTTP requests served, by method, path (/ or other) and status code.",
        labelnames=("method", "path", "code"),
        registry=registry,
    )
    latency = Histogram(
        "http_request_latency_seconds",
        "Request latency from arrival (including queueing for a worker) to response.",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    ProcessCollector(registry=registry)
    return AppMetrics(registry=registry, requests=requests, latency=latency)
