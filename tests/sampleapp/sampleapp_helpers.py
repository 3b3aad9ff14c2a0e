"""Start sample-app subprocesses on free ports and read their metrics over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from sandbox.procs import pid_alive, wait_until

DEADLINE_SECONDS = 10.0


@dataclass
class Running:
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def set_faults(self, **faults: object) -> dict[str, object]:
        status, body = self.request("POST", "/fault", json.dumps(faults).encode())
        assert status == 200, body
        return json.loads(body)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = self.request("GET", "/metrics")
        assert status == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }

    def families(self) -> dict[str, list[Sample]]:
        status, body = self.request("GET", "/metrics")
        assert status == 200
        return {f.name: f.samples for f in text_string_to_metric_families(body.decode())}

    def sample(self, name: str, **labels: str) -> float:
        return self.samples().get((name, tuple(sorted(labels.items()))), 0.0)

    def stop(self) -> str:
        """SIGTERM; assert a prompt exit 0 and no process left; return stderr."""
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, err
        assert not pid_alive(self.proc.pid)
        return err


def app_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sampleapp.server", *args]


@contextmanager
def running_app(tmp_path: Path, *args: str) -> Iterator[Running]:
    port_file = tmp_path / f"port-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        app_command("--port", "0", "--port-file", str(port_file), *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:

        def port_written() -> str:
            if proc.poll() is not None:
                raise AssertionError(f"sample app exited {proc.returncode}: {proc.stderr.read()}")
            return port_file.read_text() if port_file.exists() else ""

        port = wait_until(
            port_written, timeout=DEADLINE_SECONDS, message="the sample app's port file"
        )
        yield Running(proc=proc, port=int(port))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
