"""One typed, validated config object: a YAML file plus `AEGISOPS_<SECTION>_<KEY>` overrides.

`load_config(path, env=os.environ)` is called once in `main()`; the environment is passed
in, never read at import. Every problem is a `ConfigError` naming the key path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from aegisops.configcheck import check_cross_fields, check_targets, check_url, webhook
from aegisops.configschema import (
    ConfigError,
    Field,
    Schema,
    Secret,
    apply_env,
    check_section,
    count,
    describe,
    mask_url,
    positive,
    schema_env_keys,
)
from aegisops.detector import MAX_SEED, METRICS, DetectorParams
from aegisops.policy import Limits, PolicyParams

__all__ = ["Config", "ConfigError", "Secret", "load_config", "mask_url", "parse_config"]

ENV_PREFIX = "AEGISOPS_"
# Read by the CLI (the config file path itself), not a config key.
ENV_NOT_KEYS = frozenset({"AEGISOPS_CONFIG"})
BACKTEST_ENV_PREFIXES = ("AEGISOPS_DETECTOR_", "AEGISOPS_POLICY_")


@dataclass(frozen=True)
class WorkloadLabels:
    namespace: str
    deployment: str


@dataclass(frozen=True)
class Queries:
    rps: str
    p95_latency_seconds: str
    memory_bytes: str

    def in_order(self) -> tuple[tuple[str, str], ...]:
        """(metric, PromQL) pairs in `METRICS` order."""
        return tuple((metric, getattr(self, metric)) for metric in METRICS)


@dataclass(frozen=True)
class PrometheusConfig:
    url: str
    timeout_seconds: float
    workload_labels: WorkloadLabels
    queries: Queries
    history_lookback_seconds: float  # resolved: training window * poll interval unless set


@dataclass(frozen=True)
class Target:
    namespace: str
    deployment: str
    min_replicas: int
    max_replicas: int
    scale_step: int
    dry_run: bool | None = None  # None: the global `dry_run`

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.deployment}"

    @property
    def limits(self) -> Limits:
        return Limits(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            scale_step=self.scale_step,
        )


@dataclass(frozen=True)
class SlackConfig:
    webhook_env: str
    timeout_seconds: float
    max_retries: int
    max_retry_wait_seconds: float
    webhook: Secret | None  # from the env var named by webhook_env; None = Slack off
    max_queue: int = 100  # messages the outbox holds; when full the oldest is dropped


@dataclass(frozen=True)
class KubernetesConfig:
    mode: str
    kubeconfig: str | None
    serviceaccount_dir: str
    timeout_seconds: float
    recheck_gone_seconds: float = 600.0  # a target whose Deployment is gone: one GET this often
    forbidden_hold_seconds: float = 300.0  # after a 403: no action attempt on it for this long


@dataclass(frozen=True)
class DiscoveryConfig:
    """Opt-in by label: Deployments matching `label_selector` in `namespaces` join the targets."""

    label_selector: str | None  # None: discovery off
    namespaces: tuple[str, ...]
    interval_seconds: float
    min_replicas: int
    max_replicas: int
    scale_step: int

    @property
    def enabled(self) -> bool:
        return self.label_selector is not None


@dataclass(frozen=True)
class LeaderElectionConfig:
    """The Lease that makes exactly one engine act (None: resolved at start by the CLI)."""

    enabled: bool
    lease_name: str
    namespace: str | None
    identity: str | None
    lease_duration_seconds: float
    renew_every_seconds: float


@dataclass(frozen=True)
class AlertsConfig:
    missing_after_passes: int


@dataclass(frozen=True)
class ServerConfig:
    port: int
    host: str


@dataclass(frozen=True)
class LogConfig:
    format: str
    level: str


@dataclass(frozen=True)
class Config:
    poll_interval_seconds: float
    dry_run: bool
    prometheus: PrometheusConfig
    detector: DetectorParams
    policy: PolicyParams
    targets: tuple[Target, ...]
    slack: SlackConfig
    kubernetes: KubernetesConfig
    server: ServerConfig
    log: LogConfig
    discovery: DiscoveryConfig
    leader_election: LeaderElectionConfig
    alerts: AlertsConfig

    def describe(self) -> dict[str, Any]:
        """The effective config as plain data, secrets masked: for the one start-up log line."""
        described = _plain(self)
        assert isinstance(described, dict)
        described["prometheus"]["url"] = mask_url(self.prometheus.url)
        return described


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    return value


# --- schema --------------------------------------------------------------------------


DEFAULT_QUERIES = {
    "rps": "sum by (namespace, deployment) (rate(http_requests_total[1m]))",
    "p95_latency_seconds": (
        "histogram_quantile(0.95, sum by (namespace, deployment, le) "
        "(rate(http_request_latency_seconds_bucket[1m])))"
    ),
    "memory_bytes": "avg by (namespace, deployment) (process_resident_memory_bytes)",
}

SCHEMA: Schema = {
    "poll_interval_seconds": positive(15.0),
    "dry_run": Field(bool, False),
    "prometheus": {
        "url": Field(str, "http://prometheus-operated.monitoring.svc:9090"),
        "timeout_seconds": positive(5.0),
        "history_lookback_seconds": Field(float, None, minimum=0, above=True, nullable=True),
        "workload_labels": {
            "namespace": Field(str, "namespace"),
            "deployment": Field(str, "deployment"),
        },
        "queries": {name: Field(str, q, promql=True) for name, q in DEFAULT_QUERIES.items()},
    },
    "detector": {
        "baseline_samples": count(240, minimum=8),
        "cold_start_seconds": Field(float, 120.0, minimum=0),
        "idle_rps_below": Field(float, 0.05, minimum=0),
        "n_estimators": count(50, minimum=2),
        "max_samples": count(256, minimum=2),
        "seed": Field(int, 42, minimum=0, maximum=MAX_SEED),
        "threshold_quantile": Field(float, 0.995, minimum=0, above=True, maximum=1, below=True),
        "retrain_every_samples": count(5760),
        "max_training_samples": count(5760, minimum=8),
        "gap_factor": Field(float, 5.0, minimum=1, above=True),
        "deviation_z": positive(3.0),
        "learn_score_below": Field(float, 0.75, minimum=0.5, maximum=1),
        "adapt_after_samples": Field(int, None, minimum=8, nullable=True),
    },
    "policy": {
        "consecutive_anomalies": count(3),
        "cooldown_seconds": Field(float, 300.0, minimum=0),
        "scale_down_after_seconds": Field(float, 300.0, minimum=0, nullable=True),
        "min_relative_change": Field(float, 0.2, minimum=0),
        "verify_ready_seconds": Field(float, 120.0, minimum=0),
        "verify_passes": count(5),
        "hpa_mode": Field(str, "alert", choices=("alert", "raise_min")),
        "restart_on_memory_leak": Field(bool, False),
        "max_actions_per_pass": count(10),
        "max_actions_per_hour": count(60),
    },
    "slack": {
        "webhook_env": Field(str, "SLACK_WEBHOOK_URL"),
        "timeout_seconds": positive(5.0),
        "max_retries": count(3, minimum=0),
        "max_retry_wait_seconds": Field(float, 30.0, minimum=0),
        "max_queue": count(100),
    },
    "kubernetes": {
        "mode": Field(str, "auto", choices=("auto", "incluster", "kubeconfig")),
        "kubeconfig": Field(str, None, nullable=True),
        "serviceaccount_dir": Field(str, "/var/run/secrets/kubernetes.io/serviceaccount"),
        "timeout_seconds": positive(10.0),
        "recheck_gone_seconds": positive(600.0),
        "forbidden_hold_seconds": positive(300.0),
    },
    "discovery": {
        "label_selector": Field(str, None, nullable=True),
        "namespaces": Field(tuple, ()),
        "interval_seconds": positive(60.0),
        "min_replicas": count(1, minimum=0),
        "max_replicas": count(5),
        "scale_step": count(1),
    },
    "leader_election": {
        "enabled": Field(bool, True),
        "lease_name": Field(str, "aegisops-engine"),
        "namespace": Field(str, None, nullable=True),
        "identity": Field(str, None, nullable=True),
        "lease_duration_seconds": positive(15.0),
        "renew_every_seconds": positive(5.0),
    },
    "alerts": {
        "missing_after_passes": count(3),
    },
    "server": {
        "port": Field(int, 8080, minimum=0, maximum=65535),
        "host": Field(str, "0.0.0.0"),
    },
    "log": {
        "format": Field(str, "text", choices=("text", "json")),
        "level": Field(str, "info", choices=("debug", "info", "warning", "error")),
    },
}

TARGET_SCHEMA: Mapping[str, Field] = {
    "namespace": Field(str, None),
    "deployment": Field(str, None),
    "min_replicas": count(1, minimum=0),
    "max_replicas": count(5),
    "scale_step": count(1),
    "dry_run": Field(bool, None, nullable=True),
}

_P = TypeVar("_P")


# --- loading -------------------------------------------------------------------------


def load_config(path: str | Path, *, env: Mapping[str, str], backtest: bool = False) -> Config:
    """Read the YAML file at `path`, apply `AEGISOPS_*` overrides from `env`, validate.

    `backtest`: only the detector and policy matter; `targets` may be absent, only the
    `AEGISOPS_DETECTOR_*` / `AEGISOPS_POLICY_*` overrides apply and the webhook is not read.
    """
    return parse_config(read_yaml(Path(path)), env=env, backtest=backtest)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top, got {describe(data)}")
    return data


def parse_config(
    raw: Mapping[str, Any], *, env: Mapping[str, str], backtest: bool = False
) -> Config:
    """Validate already-parsed YAML data (plus env overrides) into a `Config`."""
    if backtest:
        env = {k: v for k, v in env.items() if k.startswith(BACKTEST_ENV_PREFIXES)}
    merged = _apply_env(raw, env)
    values = check_section(merged, SCHEMA, "", extra=frozenset({"targets"}))
    discovering = values["discovery"]["label_selector"] is not None
    targets = check_targets(
        merged.get("targets"), TARGET_SCHEMA, required=not (backtest or discovering)
    )
    check_url(values["prometheus"]["url"], key="prometheus.url")
    check_cross_fields(values)
    secret = None if backtest else webhook(values["slack"]["webhook_env"], env)
    return _build(values, tuple(Target(**t) for t in targets), webhook=secret)


def _build(
    values: dict[str, Any], targets: tuple[Target, ...], *, webhook: Secret | None
) -> Config:
    prom = values["prometheus"]
    lookback = prom["history_lookback_seconds"]
    if lookback is None:
        # the whole training window, so a restarted engine has the model it had
        detector = values["detector"]
        window = max(detector["baseline_samples"], detector["max_training_samples"])
        lookback = window * values["poll_interval_seconds"]
    return Config(
        poll_interval_seconds=values["poll_interval_seconds"],
        dry_run=values["dry_run"],
        prometheus=PrometheusConfig(
            url=prom["url"].rstrip("/"),
            timeout_seconds=prom["timeout_seconds"],
            workload_labels=WorkloadLabels(**prom["workload_labels"]),
            queries=Queries(**prom["queries"]),
            history_lookback_seconds=float(lookback),
        ),
        detector=_params(DetectorParams, values["detector"], key="detector"),
        policy=_params(PolicyParams, values["policy"], key="policy"),
        targets=targets,
        slack=SlackConfig(**values["slack"], webhook=webhook),
        kubernetes=KubernetesConfig(**values["kubernetes"]),
        server=ServerConfig(**values["server"]),
        log=LogConfig(**values["log"]),
        discovery=DiscoveryConfig(**values["discovery"]),
        leader_election=LeaderElectionConfig(**values["leader_election"]),
        alerts=AlertsConfig(**values["alerts"]),
    )


def _params(cls: Callable[..., _P], values: dict[str, Any], *, key: str) -> _P:
    """Build the pure core's own params; its cross-field checks become ConfigErrors."""
    try:
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from None


# --- environment overrides -----------------------------------------------------------


def env_keys() -> dict[str, tuple[str, ...]]:
    """`AEGISOPS_PROMETHEUS_URL` -> ("prometheus", "url") for every scalar key."""
    return schema_env_keys(SCHEMA, ENV_PREFIX)


def _apply_env(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    slack = raw.get("slack")
    skip = set(ENV_NOT_KEYS)
    for name in (
        env.get("AEGISOPS_SLACK_WEBHOOK_ENV"),
        slack.get("webhook_env") if isinstance(slack, dict) else None,
    ):
        if name:
            skip.add(name)  # the webhook's own variable may carry our prefix
    return apply_env(raw, env, schema=SCHEMA, prefix=ENV_PREFIX, skip=frozenset(skip))


# --- validation ----------------------------------------------------------------------
