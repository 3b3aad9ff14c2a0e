"""Config: YAML + AEGISOPS_* overrides -> one typed object; every mistake names its key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from aegisops.config import (
    Config,
    ConfigError,
    DiscoveryConfig,
    LeaderElectionConfig,
    Secret,
    env_keys,
    load_config,
    parse_config,
)
from aegisops.detector import DetectorParams
from aegisops.policy import Limits, PolicyParams

EXAMPLE = Path(__file__).resolve().parents[2] / "ai-engine" / "config.example.yaml"
TARGET = {"namespace": "aegisops", "deployment": "aegisops-app"}


def minimal(**sections: Any) -> dict[str, Any]:
    return {"targets": [dict(TARGET)], **sections}


def error_of(raw: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env=env or {})
    return str(info.value)


def test_example_file_loads_with_the_documented_values() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.poll_interval_seconds == 15.0
    assert config.dry_run is False
    assert config.prometheus.url == "http://prometheus-operated.monitoring.svc:9090"
    assert config.prometheus.timeout_seconds == 5.0
    assert config.prometheus.history_lookback_seconds == 5760 * 15.0  # a day: the window
    assert config.prometheus.workload_labels.namespace == "namespace"
    assert config.prometheus.queries.in_order()[0] == (
        "rps",
        "sum by (namespace, deployment) (rate(http_requests_total[1m]))",
    )
    assert [m for m, _ in config.prometheus.queries.in_order()] == [
        "rps",
        "p95_latency_seconds",
        "memory_bytes",
    ]
    assert config.detector.seed == 42
    assert config.detector.threshold_quantile == 0.995
    assert config.policy.consecutive_anomalies == 3
    assert config.policy.cooldown_seconds == 300.0
    assert [t.key for t in config.targets] == ["aegisops/aegisops-app"]
    assert config.targets[0].limits == Limits(min_replicas=1, max_replicas=5, scale_step=1)
    assert config.slack.webhook_env == "SLACK_WEBHOOK_URL"
    assert config.slack.webhook is None
    assert config.kubernetes.mode == "auto"
    assert config.server.port == 8080
    assert (config.log.format, config.log.level) == ("text", "info")


def test_example_file_sets_every_key_to_its_default() -> None:
    from_example = load_config(EXAMPLE, env={})
    from_defaults = parse_config(minimal(), env={})
    assert from_example == from_defaults
    raw = yaml.safe_load(EXAMPLE.read_text())
    documented = {".".join(path) for path in env_keys().values()}
    in_example = set(_leaf_paths(raw)) - {p for p in _leaf_paths(raw) if p.startswith("targets")}
    assert in_example == documented


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_env_overrides_win_over_the_file_and_are_typed() -> None:
    env = {
        "AEGISOPS_PROMETHEUS_URL": " http://127.0.0.1:9999/\n",
        "AEGISOPS_DRY_RUN": "true",
        "AEGISOPS_POLL_INTERVAL_SECONDS": "2",
        "AEGISOPS_LOG_FORMAT": "json",
        "AEGISOPS_DETECTOR_BASELINE_SAMPLES": "30",
        "AEGISOPS_PROMETHEUS_QUERIES_RPS": "sum by (namespace, deployment) (rate(x[5s]))",
        "AEGISOPS_KUBERNETES_KUBECONFIG": "/tmp/kubeconfig",
        "AEGISOPS_POLICY_SCALE_DOWN_AFTER_SECONDS": "600",
        "AEGISOPS_CONFIG": "/etc/aegisops/config.yaml",  # the CLI's, not a key
        "HOME": "/root",
    }
    config = parse_config(minimal(dry_run=False, log={"format": "text"}), env=env)
    assert config.prometheus.url == "http://127.0.0.1:9999"
    assert config.dry_run is True
    assert config.poll_interval_seconds == 2.0
    assert config.log.format == "json"
    assert config.detector.baseline_samples == 30
    assert config.prometheus.history_lookback_seconds == 5760 * 2.0
    assert config.prometheus.queries.rps == "sum by (namespace, deployment) (rate(x[5s]))"
    assert config.kubernetes.kubeconfig == "/tmp/kubeconfig"
    assert config.policy.scale_down_after_seconds == 600.0
    nulled = parse_config(
        minimal(policy={"scale_down_after_seconds": 60}),
        env={"AEGISOPS_POLICY_SCALE_DOWN_AFTER_SECONDS": "null"},
    )
    assert nulled.policy.scale_down_after_seconds is None


def test_history_lookback_can_be_set_explicitly() -> None:
    config = parse_config(minimal(prometheus={"history_lookback_seconds": 600}), env={})
    assert config.prometheus.history_lookback_seconds == 600.0


def test_every_scalar_key_has_its_own_env_name() -> None:
    keys = env_keys()
    assert keys["AEGISOPS_POLL_INTERVAL_SECONDS"] == ("poll_interval_seconds",)
    assert keys["AEGISOPS_PROMETHEUS_WORKLOAD_LABELS_NAMESPACE"] == (
        "prometheus",
        "workload_labels",
        "namespace",
    )
    assert len(set(keys.values())) == len(keys) == 61


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            minimal(detector={"seed": "abc"}),
            "detector.seed: expected an integer, got 'abc'",
        ),
        (
            minimal(prometheus={"timout_seconds": 3}),
            "prometheus.timout_seconds: unknown key (did you mean 'timeout_seconds'?)",
        ),
        (minimal(dry_runn=True), "dry_runn: unknown key (did you mean 'dry_run'?)"),
        (minimal(colour="blue"), "colour: unknown key"),
        (minimal(dry_run="yes"), "dry_run: expected true or false, got 'yes'"),
        (minimal(poll_interval_seconds=0), "poll_interval_seconds: must be > 0, got 0"),
        (minimal(poll_interval_seconds=True), "poll_interval_seconds: expected a number, got True"),
        (minimal(detector={"seed": 1.5}), "detector.seed: expected an integer, got 1.5"),
        (
            minimal(detector={"threshold_quantile": 1}),
            "detector.threshold_quantile: must be < 1, got 1",
        ),
        (
            minimal(detector={"baseline_samples": 6000}),
            "detector.max_training_samples: must be >= detector.baseline_samples (6000), got 5760",
        ),
        (
            minimal(detector={"baseline_samples": 100, "adapt_after_samples": 99}),
            "detector.adapt_after_samples: must be >= detector.baseline_samples (100), "
            "or null, got 99",
        ),
        (
            minimal(detector={"learn_score_below": 0.4}),
            "detector.learn_score_below: must be >= 0.5, got 0.4",
        ),
        (minimal(policy={"cooldown_seconds": -1}), "policy.cooldown_seconds: must be >= 0, got -1"),
        (minimal(log={"format": "xml"}), "log.format: expected one of 'text', 'json', got 'xml'"),
        (minimal(server={"port": 70000}), "server.port: must be <= 65535, got 70000"),
        (minimal(prometheus=[1]), "prometheus: expected a mapping, got a list"),
        (minimal(prometheus={"url": ""}), "prometheus.url: must not be empty"),
        (
            minimal(prometheus={"url": "prometheus:9090"}),
            "prometheus.url: expected an http:// or https:// URL, got 'prometheus:9090'",
        ),
        (minimal(slack={"webhook_env": None}), "slack.webhook_env: must not be null"),
        ({}, "targets: at least one target (namespace, deployment) is required"),
        ({"targets": []}, "targets: at least one target (namespace, deployment) is required"),
        ({"targets": "aegisops"}, "targets: expected a list of targets, got 'aegisops'"),
        ({"targets": ["aegisops/app"]}, "targets[0]: expected a mapping, got 'aegisops/app'"),
        ({"targets": [{"namespace": "a"}]}, "targets[0].deployment: is required"),
        (
            {"targets": [{**TARGET, "max_replicas": 0}]},
            "targets[0].max_replicas: must be >= 1, got 0",
        ),
        (
            {"targets": [{**TARGET, "min_replicas": 3, "max_replicas": 2}]},
            "targets[0].max_replicas: must be >= min_replicas (3), got 2",
        ),
        ({"targets": [{**TARGET, "scale_step": 0}]}, "targets[0].scale_step: must be >= 1, got 0"),
        (
            {"targets": [{**TARGET, "replicas": 2}]},
            "targets[0].replicas: unknown key (did you mean 'min_replicas'?)",
        ),
        (
            {"targets": [dict(TARGET), {"namespace": "x", "deployment": "y"}, dict(TARGET)]},
            "targets[2]: duplicate target aegisops/aegisops-app (already targets[0])",
        ),
        (
            {"targets": [{**TARGET, "namespace": "Prod_NS"}]},
            "targets[0].namespace: expected a Kubernetes name "
            "(lower-case letters, digits, '-'), got 'Prod_NS'",
        ),
    ],
)
def test_invalid_config_names_the_key(raw: dict[str, Any], message: str) -> None:
    assert error_of(raw) == message


def test_unparsable_promql_names_the_query() -> None:
    bad = "sum by (namespace (rate(x[1m]))"
    message = error_of(minimal(prometheus={"queries": {"rps": bad}}))
    assert message.startswith("prometheus.queries.rps: unparsable PromQL (")
    assert message.endswith(f"): {bad!r}")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"AEGISOPS_DETECTOR_SEED": "abc"},
            "detector.seed: expected an integer in AEGISOPS_DETECTOR_SEED, got 'abc'",
        ),
        (
            {"AEGISOPS_DRY_RUN": "maybe"},
            "dry_run: expected true or false in AEGISOPS_DRY_RUN, got 'maybe'",
        ),
        (
            {"AEGISOPS_PROMETHEUS_TIMEOUT": "3"},
            "AEGISOPS_PROMETHEUS_TIMEOUT: unknown environment override "
            "(did you mean 'AEGISOPS_PROMETHEUS_TIMEOUT_SECONDS'?)",
        ),
        (
            {"AEGISOPS_POLL_INTERVAL_SECONDS": "-5"},
            "poll_interval_seconds: must be > 0, got -5",
        ),
    ],
)
def test_invalid_env_override_names_the_variable(env: dict[str, str], message: str) -> None:
    assert error_of(minimal(), env) == message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"config file not found: {path}"


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("dry_run: true\nprometheus:\n  url: [unclosed\ntargets: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"{path}: invalid YAML at line 4, column ")


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"{path}: expected a mapping of keys at the top, got a list"


def test_secret_never_prints() -> None:
    secret = Secret("https://hooks.slack.com/services/T/B/XYZ")
    assert str(secret) == "***"
    assert repr(secret) == "Secret('***')"
    assert f"{secret}" == "***"
    assert f"{secret:>5}" == "  ***"
    assert secret.reveal() == "https://hooks.slack.com/services/T/B/XYZ"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "http://127.0.0.1:8099/services/T000/B000/XXXX",
        "http://localhost:8099/services/T000/B000/XXXX",
        "https://hooks.slack.com:443/services/T000/B000/XXXX",
        "http://[::1]:8099/services/T000/B000/XXXX",
    ],
)
def test_webhook_is_read_from_the_named_env_var(url: str) -> None:
    config = parse_config(minimal(slack={"webhook_env": "MY_HOOK"}), env={"MY_HOOK": url})
    assert config.slack.webhook == Secret(url)
    assert config.slack.webhook is not None
    assert config.slack.webhook.reveal() == url
    assert url not in repr(config)
    assert url not in json.dumps(config.describe())


@pytest.mark.parametrize("value", ["", "   "])
def test_unset_or_empty_webhook_means_slack_off(value: str) -> None:
    assert parse_config(minimal(), env={"SLACK_WEBHOOK_URL": value}).slack.webhook is None
    assert parse_config(minimal(), env={}).slack.webhook is None


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/services/T000/B000/SECRETPART",
        "hooks.slack.com/services/T000/B000/SECRETPART",
        "SECRETPART",
        "https:///SECRETPART",
        "http://[SECRETPART/",
        "https://hooks.slack.com/services/T000/B000/SECRET PART",
        "https://hooks..slack.com/services/T000/B000/SECRETPART",
        "https://.slack.com/services/SECRETPART",
        "https://hooks.slack.com:99999/services/SECRETPART",
        "https://hooks.slack.com:0/services/SECRETPART",
        "https://-hooks.slack.com/services/SECRETPART",
    ],
)
def test_malformed_webhook_is_a_startup_error_without_the_url(url: str) -> None:
    message = error_of(minimal(), {"SLACK_WEBHOOK_URL": url})
    assert message == (
        "slack.webhook: the value of $SLACK_WEBHOOK_URL is not an https:// URL with a valid "
        "host and port (the URL itself is not shown)"
    )
    assert "SECRETPART" not in message


def test_seed_leaves_room_for_the_second_half_of_the_forest() -> None:
    # the forest seeds its second half with seed + 1, and numpy wants seeds < 2**32
    assert parse_config(minimal(detector={"seed": 2**32 - 2}), env={}).detector.seed == 2**32 - 2
    assert error_of(minimal(detector={"seed": 2**32 - 1})) == (
        "detector.seed: must be <= 4294967294, got 4294967295"
    )


def test_userinfo_in_the_prometheus_url_is_masked_in_the_startup_line() -> None:
    raw = minimal(prometheus={"url": "https://admin:hunter2@prom.example:9090"})
    config = parse_config(raw, env={})
    assert config.prometheus.url == "https://admin:hunter2@prom.example:9090"  # used as is
    assert config.describe()["prometheus"]["url"] == "https://***@prom.example:9090"
    assert "hunter2" not in json.dumps(config.describe())
    bad = error_of(minimal(prometheus={"url": "ftp://admin:hunter2@prom.example"}))
    assert (
        bad == "prometheus.url: expected an http:// or https:// URL, got 'ftp://***@prom.example'"
    )


def test_webhook_env_var_may_carry_the_aegisops_prefix() -> None:
    raw = minimal(slack={"webhook_env": "AEGISOPS_SLACK_URL"})
    config = parse_config(raw, env={"AEGISOPS_SLACK_URL": "https://hooks.slack.com/x"})
    assert config.slack.webhook == Secret("https://hooks.slack.com/x")


def test_describe_is_the_effective_config_with_secrets_masked() -> None:
    env = {"SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/SECRETPART"}
    config = parse_config(minimal(dry_run=True), env=env)
    described = config.describe()
    assert described["dry_run"] is True
    assert described["slack"]["webhook"] == "***"
    assert described["targets"] == [
        {
            "namespace": "aegisops",
            "deployment": "aegisops-app",
            "min_replicas": 1,
            "max_replicas": 5,
            "scale_step": 1,
            "dry_run": None,
        }
    ]
    assert described["detector"]["n_estimators"] == 50
    assert described["prometheus"]["workload_labels"] == {
        "namespace": "namespace",
        "deployment": "deployment",
    }
    text = json.dumps(described)
    assert "SECRETPART" not in text
    assert isinstance(config, Config)


def test_defaults_are_the_pure_core_defaults() -> None:
    config = parse_config(minimal(), env={})
    assert config.detector == DetectorParams()
    assert config.policy == PolicyParams(scale_down_after_seconds=300.0)  # docs/safety.md


def test_the_reference_documents_every_key_and_env_var() -> None:
    reference = (EXAMPLE.parents[1] / "README.md").read_text()
    for env_name, path in env_keys().items():
        assert f"| `{'.'.join(path)}` |" in reference, path
        assert f"`{env_name}`" in reference, env_name
    for key in ("namespace", "deployment", "min_replicas", "max_replicas", "scale_step"):
        assert f"| `{key}` |" in reference, key


def test_the_safety_keys_have_their_documented_defaults() -> None:
    config = parse_config(minimal(), env={})
    assert config.targets[0].dry_run is None
    assert config.kubernetes.recheck_gone_seconds == 600.0
    assert config.kubernetes.forbidden_hold_seconds == 300.0
    assert config.alerts.missing_after_passes == 3
    assert config.discovery == DiscoveryConfig(
        label_selector=None,
        namespaces=(),
        interval_seconds=60.0,
        min_replicas=1,
        max_replicas=5,
        scale_step=1,
    )
    assert not config.discovery.enabled
    assert config.leader_election == LeaderElectionConfig(
        enabled=True,
        lease_name="aegisops-engine",
        namespace=None,
        identity=None,
        lease_duration_seconds=15.0,
        renew_every_seconds=5.0,
    )
    assert config.policy.scale_down_after_seconds == 300.0


def test_discovery_may_replace_the_targets_and_reads_namespaces_from_the_env() -> None:
    raw = {"discovery": {"label_selector": "aegisops.dev/enabled=true", "namespaces": ["shop"]}}
    config = parse_config(raw, env={"AEGISOPS_DISCOVERY_NAMESPACES": "shop, web"})
    assert config.targets == ()
    assert config.discovery.enabled
    assert config.discovery.namespaces == ("shop", "web")
    assert parse_config(raw, env={}).discovery.namespaces == ("shop",)


def test_a_target_may_set_its_own_dry_run() -> None:
    config = parse_config({"targets": [{**TARGET, "dry_run": True}]}, env={})
    assert config.targets[0].dry_run is True


@pytest.mark.parametrize(
    "selector",
    ["aegisops.dev/enabled=true", "app in (web, api),!legacy", "tier!=db,team", "a==b"],
)
def test_label_selectors_that_parse(selector: str) -> None:
    raw = minimal(discovery={"label_selector": selector, "namespaces": ["shop"]})
    assert parse_config(raw, env={}).discovery.label_selector == selector


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            minimal(poll_interval_seconds=30, policy={"cooldown_seconds": 20}),
            "policy.cooldown_seconds: must be >= poll_interval_seconds (30), got 20",
        ),
        (
            minimal(policy={"hpa_mode": "fight"}),
            "policy.hpa_mode: expected one of 'alert', 'raise_min', got 'fight'",
        ),
        (
            minimal(policy={"max_actions_per_pass": 0}),
            "policy.max_actions_per_pass: must be >= 1, got 0",
        ),
        (
            minimal(leader_election={"lease_duration_seconds": 10, "renew_every_seconds": 10}),
            "leader_election.renew_every_seconds: must be < "
            "leader_election.lease_duration_seconds (10), got 10",
        ),
        (
            minimal(leader_election={"lease_name": "Aegis_Lease"}),
            "leader_election.lease_name: expected a Kubernetes name "
            "(lower-case letters, digits, '-'), got 'Aegis_Lease'",
        ),
        (
            minimal(discovery={"label_selector": "aegisops.dev/enabled=true"}),
            "discovery.namespaces: required when discovery.label_selector is set "
            "(the namespaces to list)",
        ),
        (
            minimal(discovery={"label_selector": "a=b", "namespaces": "shop"}),
            "discovery.namespaces: expected a list of non-empty strings, got 'shop'",
        ),
        (
            minimal(discovery={"label_selector": "a=b", "namespaces": ["Shop"]}),
            "discovery.namespaces[0]: expected a Kubernetes name "
            "(lower-case letters, digits, '-'), got 'Shop'",
        ),
        (
            minimal(discovery={"label_selector": "enabled=yes=no", "namespaces": ["shop"]}),
            "discovery.label_selector: not a label selector (e.g. 'aegisops.dev/enabled=true'): "
            "'enabled=yes=no' in 'enabled=yes=no'",
        ),
        (
            minimal(discovery={"label_selector": "a in (b,c", "namespaces": ["shop"]}),
            "discovery.label_selector: not a label selector (e.g. 'aegisops.dev/enabled=true'): "
            "'a in (b' in 'a in (b,c'",
        ),
        (
            minimal(
                discovery={
                    "label_selector": "a=b",
                    "namespaces": ["shop"],
                    "min_replicas": 4,
                    "max_replicas": 2,
                }
            ),
            "discovery.max_replicas: must be >= min_replicas (4), got 2",
        ),
        (
            {"targets": [{**TARGET, "dry_run": "yes"}]},
            "targets[0].dry_run: expected true or false, got 'yes'",
        ),
        (
            minimal(alerts={"missing_after_passes": 0}),
            "alerts.missing_after_passes: must be >= 1, got 0",
        ),
        (
            minimal(kubernetes={"recheck_gone_seconds": 0}),
            "kubernetes.recheck_gone_seconds: must be > 0, got 0",
        ),
    ],
)
def test_safety_config_mistakes_name_the_key(raw: dict[str, Any], message: str) -> None:
    assert error_of(raw) == message
