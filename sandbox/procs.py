"""Process helpers shared by the sandbox launchers, and one sample-app replica process.

Every child the sandbox starts is stopped by PID: SIGTERM, wait, then SIGKILL.
Children get their own session so a Ctrl-C in the terminal reaches only the
Python parent, which then tears them down in order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

import requests

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """A condition polled by `wait_until` did not hold before the deadline."""


class Managed:
    """start()/close() plus a with-block that cleans up after a failed start too.

    Subclasses define `start()` (returning self) and `stop()`; `close()` is `stop()`
    unless it has more to release (temp dirs).
    """

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def spawn(
    *,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session with stdout and stderr appended to `log_path`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[Any], *, timeout: float = 10.0) -> int | None:
    """Stop `proc` by PID: SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=timeout)


def pid_alive(pid: int) -> bool:
    """True when `pid` names a live process (zombies count as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def live_children(ppid: int | None = None) -> list[int]:
    """PIDs of the live (non-zombie) direct children of `ppid` (default: this process)."""
    parent = os.getpid() if ppid is None else ppid
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == parent and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    """The command line of `pid` ('?' when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def tail(path: Path, *, lines: int = 20) -> str:
    """The last `lines` lines of a text file ('' when missing)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.1,
    message: str = "condition",
) -> T:
    """Poll `predicate` until it returns a truthy value; raise WaitTimeout at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class ReplicaFailed(RuntimeError):
    """A sample-app process exited or did not answer /healthz in time."""


@dataclass
class Replica:
    """One sample-app process standing in for a pod."""

    namespace: str
    deployment: str
    pod: str
    proc: subprocess.Popen[bytes]
    port_file: Path
    log_path: Path
    port: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, *, timeout: float) -> None:
        def ready() -> bool:
            if not self.alive():
                code = self.proc.returncode
                raise ReplicaFailed(
                    f"pod {self.pod} exited with code {code}:\n{tail(self.log_path)}"
                )
            if self.port is None:
                text = self.port_file.read_text() if self.port_file.exists() else ""
                if not text.strip():
                    return False
                self.port = int(text)
            try:
                return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(ready, timeout=timeout, interval=0.05, message=f"pod {self.pod} /healthz")
        except WaitTimeout as err:
            raise ReplicaFailed(f"{err}\n{tail(self.log_path)}") from None


def start_replica(
    *,
    namespace: str,
    deployment: str,
    pod: str,
    directory: Path,
    args: Sequence[str],
    env: Mapping[str, str],
) -> Replica:
    """Start one sample-app process on 127.0.0.1 (port chosen by the kernel); not yet ready."""
    port_file = directory / f"{pod}.port"
    log_path = directory / f"{pod}.log"
    argv = [sys.executable, "-m", "sampleapp.server", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--port-file", str(port_file), *args]
    # APP_* settings come only from `env`, never from this process's environment.
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
    child_env.update(env)
    child_env["PYTHONUNBUFFERED"] = "1"
    proc = spawn(argv=argv, log_path=log_path, env=child_env)
    return Replica(
        namespace=namespace,
        deployment=deployment,
        pod=pod,
        proc=proc,
        port_file=port_file,
        log_path=log_path,
    )
