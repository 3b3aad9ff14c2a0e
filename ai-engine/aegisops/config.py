"""One typed, validated config object: a YAML file plus `AEGISOPS_<SECTION>_<KEY>` overrides.

`load_config(path, env=os.environ)` is called once in `main()`; the environment is passed
in, never read at import. Every problem is a `ConfigError` naming the key path.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from aegisops.configschema import (
    ConfigError,
    Field,
    Schema,
    apply_env,
    check_section,
    count,
    describe,
    positive,
    schema_env_keys,
)
from aegisops.detector import MAX_SEED, METRICS, DetectorParams
from aegisops.policy import Limits, PolicyParams

__all__ = ["Config", "ConfigError", "Secret", "load_config", "mask_url", "parse_config"]

ENV_PREFIX = "AEGISOPS_"
# Read by the CLI (the config file path itself), not a config key.
ENV_NOT_KEYS = frozenset({"AEGISOPS_CONFIG"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BACKTEST_ENV_PREFIXES = ("AEGISOPS_DETECTOR_", "AEGISOPS_POLICY_")


class Secret:
    """A string that never prints: str, repr and format all give `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "***"

    def __repr__(self) -> str:
        return "Secret('***')"

    def __format__(self, spec: str) -> str:
        return format("***", spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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

    def describe(self) -> dict[str, Any]:
        """The effective config as plain data, secrets masked: for the one start-up log line."""
        described = _plain(self)
        assert isinstance(described, dict)
        described["prometheus"]["url"] = mask_url(self.prometheus.url)
        return described


def mask_url(url: str) -> str:
    """`url` with any `user:password@` shown as `***@` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


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
        "scale_down_after_seconds": Field(float, None, minimum=0, nullable=True),
        "min_relative_change": Field(float, 0.2, minimum=0),
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
}

_P = TypeVar("_P")
_K8S_NAME = {
    "namespace": re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),  # DNS-1123 label
    "deployment": re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),  # DNS-1123 subdomain
}


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
    targets = _targets(merged.get("targets"), required=not backtest)
    _check_url(values["prometheus"]["url"], key="prometheus.url")
    detector = values["detector"]
    if detector["max_training_samples"] < detector["baseline_samples"]:
        raise ConfigError(
            f"must be >= detector.baseline_samples ({detector['baseline_samples']}), "
            f"got {detector['max_training_samples']}",
            key="detector.max_training_samples",
        )
    adapt = detector["adapt_after_samples"]
    if adapt is not None and adapt < detector["baseline_samples"]:
        raise ConfigError(
            f"must be >= detector.baseline_samples ({detector['baseline_samples']}), "
            f"or null, got {adapt}",
            key="detector.adapt_after_samples",
        )
    webhook = None if backtest else _webhook(values["slack"]["webhook_env"], env)
    return _build(values, targets, webhook=webhook)


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


def _targets(raw: Any, *, required: bool = True) -> tuple[Target, ...]:
    if (raw is None or raw == []) and not required:
        return ()
    if raw is None or raw == []:
        raise ConfigError("at least one target (namespace, deployment) is required", key="targets")
    if not isinstance(raw, list):
        raise ConfigError(f"expected a list of targets, got {describe(raw)}", key="targets")
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        key = f"targets[{index}]"
        target = Target(**check_section(item, TARGET_SCHEMA, key))
        for name in ("namespace", "deployment"):
            if not _K8S_NAME[name].match(getattr(target, name)):
                raise ConfigError(
                    f"expected a Kubernetes name (lower-case letters, digits, '-'), "
                    f"got {getattr(target, name)!r}",
                    key=f"{key}.{name}",
                )
        if target.max_replicas < target.min_replicas:
            raise ConfigError(
                f"must be >= min_replicas ({target.min_replicas}), got {target.max_replicas}",
                key=f"{key}.max_replicas",
            )
        if target.key in seen:
            raise ConfigError(
                f"duplicate target {target.key} (already targets[{seen[target.key]}])", key=key
            )
        seen[target.key] = index
        targets.append(target)
    return tuple(targets)


def _check_url(url: str, *, key: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"expected an http:// or https:// URL, got {mask_url(url)!r}", key=key)


def _webhook(env_name: str, env: Mapping[str, str]) -> Secret | None:
    """The Slack webhook from the env var `env_name`; unset or empty means Slack is off.

    Checked as urllib3 (under requests) will parse it, so a URL that passes here can be
    posted to: https (plain http only to a local host), a well-formed host, a valid port.
    """
    url = env.get(env_name, "").strip()
    if not url:
        return None
    if not _usable_webhook(url):
        raise ConfigError(
            f"the value of ${env_name} is not an https:// URL with a valid host and port "
            "(the URL itself is not shown)",
            key="slack.webhook",
        )
    return Secret(url)


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _usable_webhook(url: str) -> bool:
    if any(c.isspace() for c in url):
        return False
    try:
        parts = parse_url(url)
    except LocationParseError:
        return False
    host = parts.host or ""
    local_http = parts.scheme == "http" and host in LOCAL_HOSTS | {"[::1]"}
    if parts.scheme != "https" and not local_http:
        return False
    if parts.port is not None and not 0 < parts.port < 65536:
        return False
    if host.startswith("[") and host.endswith("]"):
        return True  # an IPv6 literal: urllib3 has checked it
    return bool(host) and all(_HOST_LABEL.match(label) for label in host.split("."))
