"""The CLI: exit codes and the one clear line for bad input; not-ready-until-fixed in a pod.

`run` is exercised as the real console script in a subprocess (signals, exit codes);
`check` and `backtest` in-process through `main(argv, env=...)`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from aegisops.cli import fallback_server, main
from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import free_port, spawn, stop_process, tail, wait_until
from sandbox.slack import SlackReceiver

AEGISOPS = str(Path(sys.executable).with_name("aegisops"))
RBAC = Path(__file__).resolve().parents[2] / "kubernetes" / "rbac.yaml"
TOKEN = "engine-token"
ENGINE_USER = "system:serviceaccount:aegisops:aegisops-engine"


def base_env() -> dict[str, str]:
    strip = ("AEGISOPS_", "KUBERNETES_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(strip)}
    env.pop("SLACK_WEBHOOK_URL", None)
    env.pop("KUBECONFIG", None)
    return env


def write_config(path: Path, **overrides: Any) -> Path:
    raw: dict[str, Any] = {
        "poll_interval_seconds": 1,
        "prometheus": {"url": f"http://127.0.0.1:{free_port()}", "timeout_seconds": 1},
        "targets": [{"namespace": "aegisops", "deployment": "web"}],
        "server": {"port": 0},
    }
    raw.update(overrides)
    path.write_text(yaml.safe_dump(raw))
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AEGISOPS, *args], capture_output=True, text=True, env=env or base_env(), timeout=60
    )


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> Iterator[None]:
    """In-process main() installs a root handler on the captured stderr: remove it after."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "aegisops", False)]:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(tls=True, rbac_files=[RBAC], tokens={TOKEN: ENGINE_USER}) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "aegisops"}})
        yield server


def test_version_and_help() -> None:
    done = run("--version")
    assert (done.returncode, done.stdout) == (0, "aegisops 0.1.0\n")
    done = run("run", "--help")
    assert done.returncode == 0
    assert "--once" in done.stdout and "--dry-run" in done.stdout and "--log-format" in done.stdout


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"detector": {"seed": "abc"}}, "detector.seed: expected an integer, got 'abc'"),
        ({"targets": []}, "targets: at least one target"),
        ({"poll_interval": 3}, "poll_interval"),
        (
            {"prometheus": {"queries": {"rps": "sum(rate(x[1m]"}}},
            "prometheus.queries.rps",
        ),
    ],
)
def test_invalid_config_is_one_line_and_exit_2(
    tmp_path: Path, overrides: dict[str, Any], expected: str
) -> None:
    path = write_config(tmp_path / "config.yaml", **overrides)
    done = run("run", "--once", "--config", str(path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"aegisops: invalid config {path}: ")
    assert expected in line
    assert done.stdout == ""


def test_missing_config_file_from_the_environment(tmp_path: Path) -> None:
    env = {**base_env(), "AEGISOPS_CONFIG": str(tmp_path / "nope.yaml")}
    done = run("run", env=env)  # no port configured, not in a pod: exit, do not hang
    assert done.returncode == 2
    assert done.stderr == (
        f"aegisops: invalid config {tmp_path}/nope.yaml: config file not found: "
        f"{tmp_path}/nope.yaml\n"
    )


def readiness(url: str) -> tuple[int, str] | None:
    try:
        response = requests.get(f"{url}/readyz", timeout=1)
    except requests.RequestException:
        return None
    return response.status_code, response.text


def test_in_a_pod_a_bad_config_means_not_ready_until_fixed(
    tmp_path: Path, api: KubeAPIServer
) -> None:
    """Malformed webhook URL: /readyz 503 naming it, one log line; fixed: ready, no restart."""
    port = free_port()
    kubeconfig = api.write_kubeconfig(tmp_path / "engine.kubeconfig", token=TOKEN)
    good = {
        "server": {"port": port, "host": "127.0.0.1"},
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
    }
    path = write_config(tmp_path / "config.yaml", **good)
    env = {**base_env(), "SLACK_WEBHOOK_URL": "ftp://hooks.example/secret-path"}
    env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"  # as in a pod: stay up
    log = tmp_path / "engine.log"
    proc = spawn(argv=[AEGISOPS, "run", "--config", str(path)], log_path=log, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        status = wait_until(lambda: readiness(url), timeout=20, message="/readyz")
        assert status[0] == 503
        assert "slack.webhook: the value of $SLACK_WEBHOOK_URL is not an https:// URL" in status[1]
        assert requests.get(f"{url}/healthz", timeout=1).status_code == 200
        # The ConfigMap is fixed (here: it names another, unset variable); the engine recovers.
        path.write_text(path.read_text() + "slack: {webhook_env: NO_SUCH_VARIABLE}\n")

        def ready() -> bool:
            answer = readiness(url)
            return answer is not None and answer[0] == 200

        wait_until(ready, timeout=20, message="ready after the fix")
        assert proc.poll() is None
    finally:
        code = stop_process(proc)
    text = log.read_text()
    assert code == 0, tail(log)
    assert text.count("slack.webhook") == 1, text
    assert "secret-path" not in text
    assert "config " + str(path) + " is valid now; starting" in text
    assert text.count("Slack is off: NO_SUCH_VARIABLE is not set") == 1
    assert "Traceback" not in text


def test_no_slack_secret_runs_and_says_so_once(tmp_path: Path, api: KubeAPIServer) -> None:
    api.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "aegisops"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
                },
            },
        }
    )
    kubeconfig = api.write_kubeconfig(tmp_path / "engine.kubeconfig", token=TOKEN)
    kube = {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)}
    path = write_config(tmp_path / "config.yaml", kubernetes=kube)
    try:
        done = run("run", "--once", "--log-format", "json", "--config", str(path))
        assert done.returncode == 1  # Prometheus is down: the one pass had an error
        assert done.stderr.count("Slack is off: SLACK_WEBHOOK_URL is not set") == 1
        assert '"msg": "pass 1: 1 workloads, 0 anomalies, 0 actions, 1 errors in ' in done.stderr
        assert "Traceback" not in done.stderr

        done = run("check", "--config", str(path))
        assert done.returncode == 1
        lines = done.stdout.splitlines()
        assert lines[0] == f"[ok]   config {path}: 1 target(s), poll every 1s"
        assert lines[1].startswith("[FAIL] prometheus: query rps: cannot connect to Prometheus at ")
        assert "[ok]   kubernetes: kubeconfig auth against https://127.0.0.1:" in done.stdout
        for allowed in (
            "get deployments in aegisops",
            "patch deployments in aegisops",
            "get deployments/scale in aegisops",
            "patch deployments/scale in aegisops",
            "list horizontalpodautoscalers in aegisops",
            "deployment aegisops/web exists",
            "get leases/aegisops-engine in aegisops",  # leader election (on by default)
            "update leases/aegisops-engine in aegisops",
            "create leases in aegisops",
        ):
            assert f"[ok]   kubernetes {allowed}" in lines
        assert lines[-1] == "[--]   slack: off ($SLACK_WEBHOOK_URL not set); alerts go to the log"
    finally:
        api.delete("deployments", "aegisops", "web")


def test_sigterm_finishes_the_pass_and_exits_0(tmp_path: Path, api: KubeAPIServer) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "engine.kubeconfig", token=TOKEN)
    kube = {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)}
    path = write_config(tmp_path / "config.yaml", kubernetes=kube)
    log = tmp_path / "engine.log"
    proc = spawn(argv=[AEGISOPS, "run", "--config", str(path)], log_path=log, env=base_env())
    try:
        wait_until(lambda: "pass 2: " in log.read_text(), timeout=20, message="two passes")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "received SIGTERM, finishing the current pass" in text
    assert "stopping after " in text
    # it led (the only engine), and handed the Lease over on the way out
    assert "became leader (lease aegisops/aegisops-engine, identity " in text
    assert "released lease aegisops/aegisops-engine (identity " in text
    assert "standby pass" not in text
    lease = api.get("leases", "aegisops", "aegisops-engine")
    assert lease["spec"].get("holderIdentity") in (None, "")
    assert lease["spec"]["leaseTransitions"] >= 0


def test_check_with_bad_config_and_backtest_with_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_config(tmp_path / "bad.yaml", log={"format": "xml"})
    assert main(["check", "--config", str(bad)], env={}) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"[FAIL] config {bad}: log.format: ")

    missing = tmp_path / "missing.csv"
    assert main(["backtest", "--input", str(missing), "--output", str(tmp_path / "o")], env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("aegisops: backtest: ") and str(missing) in err
    assert len(err.splitlines()) == 1

    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,rps\n2,1.0\n1,2.0\n")
    assert (
        main(["backtest", "--input", str(trace), "--output", str(tmp_path / "o.csv")], env={}) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("aegisops: backtest: ") and len(err.splitlines()) == 1


def test_bad_config_and_a_taken_health_port_is_still_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write_config(tmp_path / "config.yaml", server={"port": port}, dry_run="maybe")
        done = run("run", "--config", str(path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(f"aegisops: invalid config {path}: dry_run: ")
    assert f"cannot listen on 0.0.0.0:{port}" in line
    assert "Traceback" not in done.stderr


def test_an_out_of_range_port_in_a_bad_config_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.yaml", server={"port": 70000})
    done = run("run", "--config", str(path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line == f"aegisops: invalid config {path}: server.port: must be <= 65535, got 70000"


def test_the_invalid_config_fallback_reads_host_and_a_valid_port(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.yaml", server={"port": 9099, "host": "127.0.0.1"})
    assert fallback_server(path, {}) == ("127.0.0.1", 9099)
    assert fallback_server(path, {"AEGISOPS_SERVER_HOST": "::1"}) == ("::1", 9099)
    assert fallback_server(path, {"AEGISOPS_SERVER_PORT": "70000"}) == ("127.0.0.1", 0)
    wide = write_config(tmp_path / "wide.yaml", server={"port": 70000})
    assert fallback_server(wide, {}) == ("0.0.0.0", 0)
    assert fallback_server(wide, {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) == ("0.0.0.0", 8080)


def test_backtest_takes_a_config_without_targets_and_ignores_unrelated_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,value\n" + "".join(f"{i},{1 + i % 3}\n" for i in range(30)))
    config = tmp_path / "bt.yaml"
    config.write_text(yaml.safe_dump({"detector": {"baseline_samples": 10}, "policy": {}}))
    env = {"SLACK_WEBHOOK_URL": "https://hooks..slack.com/x", "AEGISOPS_SERVER_PORT": "x"}
    argv = ["backtest", "--input", str(trace), "--output", str(tmp_path / "o.csv")]
    assert main([*argv, "--config", str(config)], env=env) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("backtest: 1 file(s), 30 rows, ")
    bad_seed = {"AEGISOPS_DETECTOR_SEED": "abc"}  # detector/policy overrides still apply
    assert main([*argv, "--config", str(config)], env=bad_seed) == 2
    assert "detector.seed: expected an integer in AEGISOPS_DETECTOR_SEED" in capsys.readouterr().err


def test_backtest_says_whose_limits_it_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("timestamp,value\n" + "".join(f"{i},1\n" for i in range(20)))
    two = [{"namespace": "a", "deployment": "x"}, {"namespace": "b", "deployment": "y"}]
    config = tmp_path / "bt.yaml"
    config.write_text(yaml.safe_dump({"targets": two}))
    argv = ["backtest", "--input", str(trace), "--output", str(tmp_path / "o.csv")]
    assert main([*argv, "--config", str(config)], env={}) == 0
    assert capsys.readouterr().err == (
        "backtest: the config has 2 targets; using the limits of a/x (--target NS/NAME to choose)\n"
    )
    assert main([*argv, "--config", str(config), "--target", "b/y"], env={}) == 0
    assert capsys.readouterr().err == ""
    assert main([*argv, "--config", str(config), "--target", "c/z"], env={}) == 2
    assert capsys.readouterr().err == (
        "aegisops: backtest: --target c/z is not in the config (targets: a/x, b/y)\n"
    )


def test_with_json_logs_a_bad_config_is_one_json_line(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.yaml", dry_run="maybe")
    done = run("run", "--log-format", "json", "--config", str(path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert record["msg"] == (f"invalid config {path}: dry_run: expected true or false, got 'maybe'")


def test_alerts_reach_slack_through_the_outbox_and_sigterm_still_exits_0(
    tmp_path: Path, api: KubeAPIServer
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "engine.kubeconfig", token=TOKEN)
    kube = {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)}
    path = write_config(
        tmp_path / "config.yaml", kubernetes=kube, alerts={"missing_after_passes": 2}
    )
    log = tmp_path / "engine.log"
    with SlackReceiver() as slack:
        env = {**base_env(), "SLACK_WEBHOOK_URL": slack.url}
        proc = spawn(argv=[AEGISOPS, "run", "--config", str(path)], log_path=log, env=env)
        try:
            wait_until(lambda: slack.messages(), timeout=20, message="a Slack message")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            stop_process(proc)
        texts = [m["text"] for m in slack.messages()]
    assert texts[0] == (
        "AegisOps: Prometheus is unreachable: Prometheus queries failed 2 passes in a row; "
        "no decisions meanwhile"
    )
    text = log.read_text()
    assert "(alert prometheus_down)" in text
    assert "Traceback" not in text
