"""The config's checks beyond one key: target lists, names, URLs, cross-field rules.

Works on the plain values `configschema.check_section` returns (before they become
dataclasses in `aegisops.config`); every problem is a `ConfigError` naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from aegisops.configschema import (
    ConfigError,
    Field,
    Secret,
    check_label_selector,
    check_section,
    describe,
    mask_url,
)

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
K8S_NAME = {
    "namespace": re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),  # DNS-1123 label
    "deployment": re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"),  # DNS-1123 subdomain
}
K8S_NAME["lease"] = K8S_NAME["deployment"]


def check_targets(raw: Any, schema: Mapping[str, Field], *, required: bool) -> list[dict[str, Any]]:
    """The `targets` list, each entry checked against `schema`; names valid and unique."""
    if (raw is None or raw == []) and not required:
        return []
    if raw is None or raw == []:
        raise ConfigError("at least one target (namespace, deployment) is required", key="targets")
    if not isinstance(raw, list):
        raise ConfigError(f"expected a list of targets, got {describe(raw)}", key="targets")
    targets: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        key = f"targets[{index}]"
        target = check_section(item, schema, key)
        for name in ("namespace", "deployment"):
            check_name(target[name], kind=name, key=f"{key}.{name}")
        check_bounds(target, key=key)
        ident = f"{target['namespace']}/{target['deployment']}"
        if ident in seen:
            raise ConfigError(f"duplicate target {ident} (already targets[{seen[ident]}])", key=key)
        seen[ident] = index
        targets.append(target)
    return targets


def check_name(value: str, *, kind: str, key: str) -> None:
    if not K8S_NAME[kind].match(value):
        raise ConfigError(
            f"expected a Kubernetes name (lower-case letters, digits, '-'), got {value!r}",
            key=key,
        )


def check_bounds(values: Mapping[str, Any], *, key: str) -> None:
    """min_replicas <= max_replicas (a target, or the discovery defaults)."""
    if values["max_replicas"] < values["min_replicas"]:
        raise ConfigError(
            f"must be >= min_replicas ({values['min_replicas']}), got {values['max_replicas']}",
            key=f"{key}.max_replicas",
        )


def check_cross_fields(values: Mapping[str, Any]) -> None:
    """The rules that tie two keys together (docs/safety.md, "Config keys")."""
    detector, policy = values["detector"], values["policy"]
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
    poll = values["poll_interval_seconds"]
    if policy["cooldown_seconds"] < poll:
        raise ConfigError(
            f"must be >= poll_interval_seconds ({_n(poll)}), got {_n(policy['cooldown_seconds'])}",
            key="policy.cooldown_seconds",
        )
    _check_leader(values["leader_election"])
    _check_discovery(values["discovery"])


def _check_leader(leader: Mapping[str, Any]) -> None:
    check_name(leader["lease_name"], kind="lease", key="leader_election.lease_name")
    if leader["namespace"] is not None:
        check_name(leader["namespace"], kind="namespace", key="leader_election.namespace")
    duration, renew = leader["lease_duration_seconds"], leader["renew_every_seconds"]
    if renew >= duration:
        raise ConfigError(
            f"must be < leader_election.lease_duration_seconds ({_n(duration)}), got {_n(renew)}",
            key="leader_election.renew_every_seconds",
        )


def _check_discovery(discovery: Mapping[str, Any]) -> None:
    selector = discovery["label_selector"]
    if selector is None:
        return
    check_label_selector(selector, key="discovery.label_selector")
    if not discovery["namespaces"]:
        raise ConfigError(
            "required when discovery.label_selector is set (the namespaces to list)",
            key="discovery.namespaces",
        )
    for index, namespace in enumerate(discovery["namespaces"]):
        check_name(namespace, kind="namespace", key=f"discovery.namespaces[{index}]")
    check_bounds(discovery, key="discovery")


def _n(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def check_url(url: str, *, key: str) -> None:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"expected an http:// or https:// URL, got {mask_url(url)!r}", key=key)


def webhook(env_name: str, env: Mapping[str, str]) -> Secret | None:
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
