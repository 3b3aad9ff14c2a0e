"""A real Prometheus for tests and the demo: Debian's binary, 127.0.0.1, temp dir, file_sd.

    with PrometheusServer(scrape_interval="1s") as prom:
        prom.set_targets("aegisops-app", [("127.0.0.1:8001", {"namespace": "aegisops", ...})])
        prom.query('count(up{deployment="aegisops-app"} == 1)')

Targets live in `<tmp>/targets/<job>.json` (file_sd, rewritten atomically), so they change
without a restart or reload. Prometheus applies discovered targets on a 5 s tick: allow
~6-7 s before the first `rate()` has data. Stopped by PID (SIGTERM, wait, SIGKILL).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests
import yaml

from sandbox.procs import (
    Managed,
    WaitTimeout,
    atomic_write,
    spawn,
    stop_process,
    tail,
    wait_until,
)

LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
INSTALL_HINT = (
    "install Debian's package as root (`apt-get install -y --no-install-recommends prometheus`, "
    "or `make prometheus`), or put both binaries on PATH"
)
_apt_updated = False

Target = tuple[str, Mapping[str, str]]


class PrometheusError(RuntimeError):
    """Prometheus could not be installed, started or queried; the message says what to do."""


def ensure_installed() -> None:
    """Make sure `prometheus` and `promtool` are on PATH, installing Debian's package if needed."""
    global _apt_updated
    missing = [name for name in ("prometheus", "promtool") if shutil.which(name) is None]
    if not missing:
        return
    what = " and ".join(missing)
    if shutil.which("apt-get") is None:
        raise PrometheusError(f"{what} not on PATH and apt-get is not available: {INSTALL_HINT}")
    if os.geteuid() != 0:
        raise PrometheusError(f"{what} not found on PATH and not running as root: {INSTALL_HINT}")
    steps = [["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]]
    if not _apt_updated:
        steps.insert(0, ["apt-get", "update"])
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            last = "\n".join(done.stderr.splitlines()[-10:])
            raise PrometheusError(f"`{' '.join(argv)}` failed ({done.returncode}):\n{last}")
        if argv[1] == "update":
            _apt_updated = True
    if shutil.which("prometheus") is None or shutil.which("promtool") is None:
        raise PrometheusError(f"installed the prometheus package but {what} is still missing")


class PrometheusServer(Managed):
    """One Prometheus process with its own temp dir, config and file_sd target files."""

    def __init__(
        self,
        *,
        scrape_interval: str = "1s",
        rule_files: Sequence[Path] = (),
        extra_args: Sequence[str] = (),
        ready_timeout: float = 20.0,
    ) -> None:
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.extra_args = list(extra_args)
        self.ready_timeout = ready_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="aegisops-prometheus-")
        self.dir = Path(self._tmp.name)
        self.data_dir = self.dir / "data"
        self.targets_dir = self.dir / "targets"
        self.config_path = self.dir / "prometheus.yml"
        self.log_path = self.dir / "prometheus.log"
        self.data_dir.mkdir()
        self.targets_dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise PrometheusError("Prometheus is not running")
        return self.proc.pid

    @property
    def url(self) -> str:
        if self.port is None:
            raise PrometheusError("Prometheus is not running")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        """Start Prometheus on 127.0.0.1 (port chosen by the kernel) and wait for /-/ready."""
        if self.proc is not None:
            raise PrometheusError("Prometheus is already running")
        ensure_installed()
        self._write_config()
        argv = [
            "prometheus",
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            "--web.listen-address=127.0.0.1:0",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=30d",
            *self.extra_args,
        ]
        self.proc = spawn(argv=argv, log_path=self.log_path)
        try:
            self.port = wait_until(
                self._listening_port, timeout=self.ready_timeout, message="'Listening on'"
            )
            wait_until(self._ready, timeout=self.ready_timeout, message="/-/ready")
        except (WaitTimeout, PrometheusError) as err:
            self.stop()
            raise PrometheusError(
                f"Prometheus did not start: {err}\nlast lines of {self.log_path.name}:\n"
                f"{tail(self.log_path)}"
            ) from None
        return self

    def stop(self) -> None:
        """Stop the process by PID (SIGTERM, wait, SIGKILL); the temp dir is kept until close()."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
            self.port = None

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def _listening_port(self) -> int | None:
        assert self.proc is not None
        match = LISTENING.search(self.log_path.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if self.proc.poll() is not None:
            raise PrometheusError(f"prometheus exited with code {self.proc.returncode}")
        return None

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise PrometheusError(f"prometheus exited with code {self.proc.returncode}")
        try:
            return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    # One job; each targets/<job>.json sets its own `job` label.
                    "job_name": "sandbox",
                    "scrape_timeout": self.scrape_interval,
                    "file_sd_configs": [
                        {"files": [str(self.targets_dir / "*.json")], "refresh_interval": "1s"}
                    ],
                }
            ],
        }
        if self.rule_files:
            config["rule_files"] = [str(p) for p in self.rule_files]
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # -- targets and data --------------------------------------------------------------

    def set_targets(self, job: str, targets: Iterable[Target]) -> None:
        """Replace the scrape targets of `job`: [(host:port, {label: value})]. Atomic rewrite."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", job):
            raise ValueError(f"job name {job!r}: use letters, digits, '_', '.', '-'")
        groups = [
            {"targets": [address], "labels": {**dict(labels), "job": job}}
            for address, labels in targets
        ]
        atomic_write(self.targets_dir / f"{job}.json", json.dumps(groups, indent=1))

    def reload(self) -> None:
        """POST /-/reload (config and rule files re-read)."""
        response = requests.post(f"{self.url}/-/reload", timeout=5)
        if response.status_code != 200:
            raise PrometheusError(f"/-/reload answered {response.status_code}: {response.text}")

    def backfill(self, openmetrics_text: str) -> str:
        """Make blocks from OpenMetrics text with promtool, before start(); returns its output."""
        if self.proc is not None:
            raise PrometheusError("backfill before start(): blocks are only picked up at start")
        ensure_installed()
        text = (
            openmetrics_text
            if openmetrics_text.rstrip().endswith("# EOF")
            else (openmetrics_text.rstrip("\n") + "\n# EOF\n")
        )
        source = self.dir / "backfill.om"
        source.write_text(text)
        argv = ["promtool", "tsdb", "create-blocks-from", "openmetrics"]
        done = subprocess.run(
            [*argv, str(source), str(self.data_dir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            last = "\n".join((done.stderr or done.stdout).splitlines()[-10:])
            raise PrometheusError(f"promtool could not backfill ({done.returncode}):\n{last}")
        return done.stdout

    # -- queries (for tests) -----------------------------------------------------------

    def query(self, promql: str, *, time: float | None = None) -> list[dict[str, Any]]:
        """Instant query; returns `data.result` (a list of {metric, value})."""
        params: dict[str, Any] = {"query": promql}
        if time is not None:
            params["time"] = time
        return self._api("query", params)

    def query_range(
        self, promql: str, *, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """Range query; returns `data.result` (a list of {metric, values})."""
        params = {"query": promql, "start": start, "end": end, "step": step}
        return self._api("query_range", params)

    def scalar(self, promql: str) -> float | None:
        """The value of a single-series instant query, or None when it has no series."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"{promql!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def _api(self, endpoint: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v1/{endpoint}", params=params, timeout=5)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{endpoint} {params['query']!r}: {body.get('error', body)}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result
