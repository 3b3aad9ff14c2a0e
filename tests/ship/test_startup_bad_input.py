"""Bad input at start-up, as the pod would meet it, with the real `aegisops run`:

- the ConfigMap missing (its volume is `optional`, so /etc/aegisops is empty), invalid,
  or a malformed Slack webhook URL in the Secret: the engine stays alive (/healthz 200),
  is not ready (/readyz 503), and says what is wrong in exactly one log line; a fixed
  ConfigMap makes it ready without a restart, so there is never a crash loop;
- no Slack Secret at all (secretKeyRef `optional`): the engine runs and is ready, and
  says once, and only once, that Slack is off.

The config is the shipped ConfigMap's, with only what a test must change (ports, URLs,
the service-account directory); Kubernetes is the emulator in RBAC mode with
kubernetes/rbac.yaml, reached in-cluster style as the engine's service account.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from ship_helpers import APP, BIN, ENGINE, MANIFESTS, NAMESPACE, engine_config_text, find

from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import atomic_write, free_port, spawn, stop_process, tail, wait_until
from sandbox.prometheus import PrometheusServer

TOKEN = "engine-sa-token"
ERROR = re.compile(r"\bERROR\b")


@dataclass
class Pod:
    """What the engine container would see: a config dir, a SA mount, an environment."""

    config_dir: Path
    env: dict[str, str]
    config: dict[str, Any]
    port: int
    logs: list[Path] = field(default_factory=list)

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.yaml"

    def write_config(self, **overrides: Any) -> None:
        data = yaml.safe_load(yaml.safe_dump(self.config))
        for dotted, value in overrides.items():
            section, _, key = dotted.partition("__")
            if key:
                data[section][key] = value
            else:
                data[section] = value
        atomic_write(self.config_file, yaml.safe_dump(data, sort_keys=False))

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def pod(tmp_path: Path, prometheus: PrometheusServer) -> Iterator[Pod]:
    rbac = [MANIFESTS / "rbac.yaml"]
    user = f"system:serviceaccount:{NAMESPACE}:{ENGINE}"
    with KubeAPIServer(tls=True, tokens={TOKEN: user}, rbac_files=rbac) as api:
        api.create(find("Namespace", NAMESPACE))
        api.create(find("Deployment", APP))
        sa_dir = tmp_path / "serviceaccount"
        kube_env = api.incluster_files(sa_dir, token=TOKEN)
        config = yaml.safe_load(engine_config_text())
        port = free_port()
        config["poll_interval_seconds"] = 1
        config["server"]["port"] = port
        config["prometheus"]["url"] = prometheus.url
        config["kubernetes"]["serviceaccount_dir"] = str(sa_dir)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            **kube_env,
        }
        config_dir = tmp_path / "etc-aegisops"
        config_dir.mkdir()
        yield Pod(config_dir=config_dir, env=env, config=config, port=port)
        denied = api.requests(user=user, code=403)
        assert denied == [], f"the engine was denied: {denied}"


@pytest.fixture
def start(pod: Pod, tmp_path: Path) -> Iterator[Any]:
    """start(extra_env) runs `aegisops run --config <pod config>`; stopped by PID after."""
    procs = []

    def run(**extra_env: str) -> Any:
        log = tmp_path / f"engine-{len(procs)}.log"
        pod.logs.append(log)
        proc = spawn(
            argv=[str(BIN / "aegisops"), "run", "--config", str(pod.config_file)],
            log_path=log,
            env={**pod.env, **extra_env},
        )
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0, "SIGTERM should end the engine cleanly"
        stop_process(proc)


def probe(pod: Pod, path: str) -> tuple[int, str] | None:
    try:
        response = requests.get(pod.url(path), timeout=2)
    except requests.RequestException:
        return None
    return response.status_code, response.text


def log_lines(pod: Pod) -> list[str]:
    return pod.logs[-1].read_text().splitlines()


def wait_not_ready(pod: Pod, proc: Any) -> str:
    """Wait until the engine serves /readyz 503; return the reason it gives."""

    def answered() -> tuple[int, str] | None:
        assert proc.poll() is None, f"the engine exited:\n{tail(pod.logs[-1])}"
        return probe(pod, "/readyz")

    status, reason = wait_until(answered, timeout=30, message="/readyz")
    assert status == 503, reason
    assert probe(pod, "/healthz") == (200, "ok\n")  # alive: no liveness restart
    return reason


def single_error(pod: Pod) -> str:
    errors = [line for line in log_lines(pod) if ERROR.search(line)]
    assert len(errors) == 1, "\n".join(errors)
    return errors[0]


def test_invalid_configmap_not_ready_with_one_line_then_ready_once_fixed(
    pod: Pod, start: Any
) -> None:
    pod.write_config(detector__seed="abc")
    engine = start()
    reason = wait_not_ready(pod, engine)
    assert "detector.seed" in reason
    line = single_error(pod)
    assert "detector.seed: expected an integer, got 'abc'" in line and "not ready" in line

    # The kubelet updates the mounted ConfigMap: the engine picks it up, no restart.
    pod.write_config()
    wait_until(lambda: probe(pod, "/readyz") == (200, "ready\n"), timeout=30, message="ready")
    assert engine.poll() is None
    single_error(pod)  # re-checked every few seconds, but said once


def test_missing_configmap_not_ready_with_one_line_naming_the_file(pod: Pod, start: Any) -> None:
    # Inside a pod the engine would stay up on 8080; here the port comes from the env.
    engine = start(AEGISOPS_SERVER_PORT=str(pod.port))
    reason = wait_not_ready(pod, engine)
    assert str(pod.config_file) in reason
    line = single_error(pod)
    assert f"config file not found: {pod.config_file}" in line


def test_malformed_webhook_url_not_ready_and_the_url_never_logged(pod: Pod, start: Any) -> None:
    pod.write_config()
    secret_value = "hooks.slack.com/services/T0000/B0000/notAnUrlButSecret"
    engine = start(SLACK_WEBHOOK_URL=secret_value)
    reason = wait_not_ready(pod, engine)
    assert "SLACK_WEBHOOK_URL" in reason
    line = single_error(pod)
    assert "slack.webhook" in line and "SLACK_WEBHOOK_URL is not an https:// URL" in line
    assert "notAnUrlButSecret" not in pod.logs[-1].read_text() + reason


def test_no_slack_secret_runs_ready_and_says_once_that_slack_is_off(pod: Pod, start: Any) -> None:
    pod.write_config()
    engine = start()  # no SLACK_WEBHOOK_URL: the optional secretKeyRef found no Secret

    def passes() -> float:
        assert engine.poll() is None, tail(pod.logs[-1])
        answer = probe(pod, "/metrics")
        match = answer and re.search(r"^aegisops_passes_total (\S+)$", answer[1], re.M)
        return float(match[1]) if match else 0.0

    wait_until(lambda: passes() >= 3, timeout=40, message="three passes")
    assert probe(pod, "/readyz") == (200, "ready\n")
    slack_off = [line for line in log_lines(pod) if "Slack is off" in line]
    assert len(slack_off) == 1, slack_off
    assert "SLACK_WEBHOOK_URL is not set" in slack_off[0]
