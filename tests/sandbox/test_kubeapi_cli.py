"""`python -m sandbox.kubeapi`: serves until SIGTERM/SIGINT, writes a kubeconfig kubectl uses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CLI = [sys.executable, "-m", "sandbox.kubeapi"]


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_signalled_and_kubectl_uses_the_kubeconfig(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = _start(
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
        "--tls",
        "--token",
        "t1=system:serviceaccount:aegisops:aegisops-engine",
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the server is up (or the CLI died)
        assert first.startswith("serving https://127.0.0.1:"), (
            proc.stderr.read() if proc.stderr else ""
        )
        assert first.rstrip().endswith(f"(kubeconfig: {kubeconfig})")
        config = yaml.safe_load(kubeconfig.read_text())
        assert config["clusters"][0]["cluster"]["server"] == first.split()[1]
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        done = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "get", "ns", "-o", "name"],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert done.stdout.split() == ["namespace/default", "namespace/kube-system"], done.stderr
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == "stopped\n"


def test_help_and_bad_arguments(tmp_path: Path) -> None:
    shown = subprocess.run(
        [*CLI, "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert shown.returncode == 0
    assert "--kubeconfig" in shown.stdout and "--rbac FILE" in shown.stdout

    missing = subprocess.run(
        [*CLI, "--kubeconfig", str(tmp_path / "k"), "--rbac", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == (
        f"error: cannot read RBAC file {tmp_path / 'nope.yaml'}: No such file or directory\n"
    )

    bad_token = subprocess.run(
        [*CLI, "--kubeconfig", str(tmp_path / "k"), "--token", "oops"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (bad_token.returncode, bad_token.stderr) == (
        2,
        "error: --token expects TOKEN=USER, got 'oops'\n",
    )


def _run_isolated(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the CLI with its own TMPDIR, so what it leaves behind there can be counted."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    done = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "TMPDIR": str(tmpdir)},
    )
    return done, tmpdir


def test_busy_port_is_one_clear_line_and_leaves_no_temp_dir(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done, tmpdir = _run_isolated(
            tmp_path, "--port", str(port), "--tls", "--kubeconfig", str(tmp_path / "k")
        )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert list(tmpdir.iterdir()) == []  # no aegisops-kubeapi-* dir (with its CA) left
    assert not (tmp_path / "k").exists()


def test_unwritable_kubeconfig_is_one_line_exit_2_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "missing-dir" / "kubeconfig"
    done, tmpdir = _run_isolated(tmp_path, "--port", "0", "--tls", "--kubeconfig", str(target))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"error: cannot write the kubeconfig {target}: No such file or directory\n"
    )
    assert list(tmpdir.iterdir()) == []
    assert not target.parent.exists()
