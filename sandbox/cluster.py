"""Process-backed Deployments: a tiny "kubelet" for the sandbox.

It watches Deployments through the Kubernetes API (the emulator, over HTTP, with the
official client: a watch plus a periodic resync) and, for each Deployment it manages,
runs `spec.replicas` sample-app processes on 127.0.0.1, each on its own port. When the
replicas answer /healthz it writes the Deployment's `status` through the
`deployments/status` subresource and publishes the live set: Prometheus targets
(labels namespace, deployment, pod; job = the Deployment's name) and a targets file
for the load generator (one URL a line, rewritten atomically).

Managed Deployments: those matching `selector`, by default the label
`app.kubernetes.io/name=aegisops-app` (the label of kubernetes/app-deployment.yaml).
Sample-app settings come from the first container: its `args` and its `env` entries
named APP_* with a literal `value` (see `aegisops-sample-app --help`), then the annotation
`sandbox.aegisops.dev/app-args` (e.g. "--workers 2 --service-time 0.05"), which wins.
Host, port and port-file are always the kubelet's, and replicas run with `--enable-faults`
(POST /fault), which the shipped manifests leave off. Settings are read when a replica
starts. Scale-down stops the newest replicas first (SIGTERM, wait, SIGKILL); a replica
that dies is replaced on the next resync.

Capacity (`capacity=n`, `set_capacity(n)`): at most n processes across the cluster;
replicas over it stay Pending (in status.replicas, never started or ready) until it
grows; shrinking it evicts nothing. Status as kube writes it: sandbox.deploystatus.
"""

from __future__ import annotations

import json
import logging
import random
import shlex
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sandbox.deploystatus import deployment_status
from sandbox.procs import (
    Managed,
    Replica,
    ReplicaFailed,
    atomic_write,
    start_replica,
    stop_process,
)

log = logging.getLogger("sandbox.cluster")

DEFAULT_SELECTOR = "app.kubernetes.io/name=aegisops-app"
ARGS_ANNOTATION = "sandbox.aegisops.dev/app-args"
APP_FLAGS = frozenset(
    [
        "--workers",
        "--service-time",
        "--jitter",
        "--seed",
        "--extra-latency",
        "--leak-bytes-per-second",
        "--error-rate",
        "--max-leak-bytes",
    ]
)
KUBELET_ENV = frozenset({"APP_HOST", "APP_PORT", "APP_PORT_FILE"})
Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name)
TargetsListener = Callable[[str, str, list[tuple[str, dict[str, str]]]], None]


def app_settings(deployment: Obj) -> tuple[list[str], dict[str, str]]:
    """(sample-app flags, APP_* env) taken from a Deployment, as the module docstring says."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers")
    first = (containers or [{}])[0]
    env = {
        e["name"]: str(e["value"])
        for e in first.get("env") or []
        if e.get("name", "").startswith("APP_") and e["name"] not in KUBELET_ENV and "value" in e
    }
    annotation = deployment.get("metadata", {}).get("annotations", {}).get(ARGS_ANNOTATION, "")
    return _allowed_flags([*(first.get("args") or []), *shlex.split(annotation)]), env


def _allowed_flags(args: list[str]) -> list[str]:
    kept: list[str] = []
    items = iter(args)
    for arg in items:
        flag, eq, value = arg.partition("=")
        if not eq:
            value = next(items, "")
        if flag in APP_FLAGS:
            kept += [flag, value]
        else:
            log.warning("ignoring sample-app argument %r (not one the kubelet passes on)", arg)
    return kept


def _checked_capacity(capacity: int | None) -> int | None:
    if capacity is not None and (isinstance(capacity, bool) or capacity < 0):
        raise ValueError(f"capacity must be None or a whole number >= 0, got {capacity!r}")
    return capacity


def desired_replicas(deployment: Obj) -> int:
    replicas = deployment.get("spec", {}).get("replicas")
    return 1 if replicas is None else int(replicas)


@dataclass
class _Workload:
    replicas: list[Replica] = field(default_factory=list)
    failures: int = 0
    pending: int = 0


class Kubelet(Managed):
    """Watches Deployments and keeps `spec.replicas` sample-app processes running for each."""

    def __init__(
        self,
        *,
        api_client: k8s.ApiClient,
        namespace: str | None = "aegisops",
        selector: str = DEFAULT_SELECTOR,
        on_targets: TargetsListener | None = None,
        targets_file: Path | None = None,
        resync_seconds: float = 2.0,
        ready_timeout: float = 30.0,
        seed: int = 0,
        capacity: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.apps = k8s.AppsV1Api(api_client)
        self.namespace = namespace
        self.selector = selector
        self.on_targets = on_targets
        self.targets_file = targets_file
        self.resync_seconds = resync_seconds
        self.ready_timeout = ready_timeout
        self._random = random.Random(seed)
        self.capacity = _checked_capacity(capacity)
        self.clock = clock
        self._tmp = tempfile.TemporaryDirectory(prefix="aegisops-kubelet-")
        self.dir = Path(self._tmp.name)
        self._workloads: dict[Key, _Workload] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch_response: Any = None
        self._seq = 0
        if targets_file is not None:
            atomic_write(targets_file, "")

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Kubelet:
        """Reconcile once (replicas ready before returning), then watch and resync."""
        self.reconcile_all()
        for target, name in ((self._watch_loop, "kubelet-watch"), (self._sync_loop, "kubelet")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop the threads, then every replica by PID; clear targets."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            while thread.is_alive():
                response = self._watch_response
                if response is not None:
                    response.shutdown()  # unblocks the watch read
                thread.join(timeout=0.1)
        self._threads.clear()
        with self._lock:
            keys = list(self._workloads)
        for key in keys:
            self._scale_down(key, to=0)
        self._tmp.cleanup()

    def set_capacity(self, capacity: int | None) -> None:
        """At most `capacity` processes from now on (None: unlimited); Pending ones start."""
        self.capacity = _checked_capacity(capacity)
        self._wake.set()

    # -- what tests and the world read --------------------------------------------------

    def replicas(self, *, namespace: str, name: str) -> list[Replica]:
        with self._lock:
            return list(self._workloads.get((namespace, name), _Workload()).replicas)

    def pids(self) -> list[int]:
        with self._lock:
            return [r.proc.pid for w in self._workloads.values() for r in w.replicas]

    # -- reconciliation ----------------------------------------------------------------

    def _list(self, **kwargs: Any) -> Any:
        if self.namespace is None:
            return self.apps.list_deployment_for_all_namespaces(
                label_selector=self.selector, _preload_content=False, **kwargs
            )
        return self.apps.list_namespaced_deployment(
            self.namespace, label_selector=self.selector, _preload_content=False, **kwargs
        )

    def reconcile_all(self) -> str:
        """List managed Deployments and converge each; returns the list's resourceVersion."""
        listing = json.loads(self._list(_request_timeout=10).data)
        seen: set[Key] = set()
        for deployment in listing.get("items", []):
            meta = deployment["metadata"]
            key = (meta["namespace"], meta["name"])
            seen.add(key)
            try:
                self._reconcile(key, deployment)
            except (ApiException, ReplicaFailed, OSError) as err:
                log.error("%s/%s: reconcile failed: %s", *key, err)
        with self._lock:
            gone = [key for key in self._workloads if key not in seen]
        for key in gone:
            log.info("%s/%s: deployment gone, stopping its replicas", *key)
            self._scale_down(key, to=0)
            with self._lock:
                self._workloads.pop(key, None)
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    def _reconcile(self, key: Key, deployment: Obj) -> None:
        with self._lock:
            workload = self._workloads.setdefault(key, _Workload())
        self._reap(key, workload)
        want, have = desired_replicas(deployment), len(workload.replicas)
        room = min(want - have, self._room())
        if room > 0:
            self._scale_up(key, deployment, count=room)
        elif want < have:
            self._scale_down(key, to=want)
        self._note_pending(key, workload, want=want)
        self._write_status(key, deployment)

    def _room(self) -> int:
        """How many more processes capacity allows (a large number when unlimited)."""
        if self.capacity is None:
            return 1 << 30
        with self._lock:
            running = sum(len(w.replicas) for w in self._workloads.values())
        return max(self.capacity - running, 0)

    def _note_pending(self, key: Key, workload: _Workload, *, want: int) -> None:
        pending = max(want - len(workload.replicas), 0)
        if pending != workload.pending:
            log.info("%s/%s: %d replicas Pending (capacity %s)", *key, pending, self.capacity)
            workload.pending = pending

    def _reap(self, key: Key, workload: _Workload) -> None:
        dead = [r for r in workload.replicas if not r.alive()]
        if not dead:
            return
        for replica in dead:
            log.warning(
                "%s/%s: pod %s exited with code %s, replacing it",
                *key,
                replica.pod,
                replica.proc.returncode,
            )
        with self._lock:
            workload.replicas = [r for r in workload.replicas if r.alive()]
        self._publish(key)

    def _scale_up(self, key: Key, deployment: Obj, *, count: int) -> None:
        flags, env = app_settings(deployment)
        started: list[Replica] = []
        try:
            for _ in range(count):
                started.append(self._start_replica(key, flags=flags, env=env))
        except BaseException:  # e.g. the 2nd spawn fails: the 1st must not be orphaned
            for replica in started:
                stop_process(replica.proc)
            raise
        ready, failed = [], []
        for replica in started:
            try:
                replica.wait_ready(timeout=self.ready_timeout)
                ready.append(replica)
            except ReplicaFailed as err:
                failed.append((replica, err))
        for replica, _ in failed:
            stop_process(replica.proc)
        with self._lock:
            workload = self._workloads[key]
            before = len(workload.replicas)
            workload.replicas += ready
            after = len(workload.replicas)
        if ready:
            pods = ", ".join(f"{r.pod}@{r.port}" for r in ready)
            log.info("%s/%s: scaled up %d -> %d replicas (%s)", *key, before, after, pods)
            self._publish(key)
        if failed:
            raise ReplicaFailed("; ".join(str(err) for _, err in failed))

    def _start_replica(self, key: Key, *, flags: list[str], env: dict[str, str]) -> Replica:
        self._seq += 1
        return start_replica(
            namespace=key[0],
            deployment=key[1],
            pod=f"{key[1]}-{self._random.getrandbits(40):010x}",
            directory=self.dir,
            # the sandbox is loopback-only: tests and the demo may flip faults at runtime
            args=["--enable-faults", "--seed", str(self._seq), *flags],
            env=env,
        )

    def _scale_down(self, key: Key, *, to: int) -> None:
        with self._lock:
            workload = self._workloads.get(key)
            if workload is None or len(workload.replicas) <= to:
                return
            before = len(workload.replicas)
            leaving = workload.replicas[to:]
            workload.replicas = workload.replicas[:to]
        self._publish(key)  # out of rotation first, then stopped
        for replica in leaving:
            replica.proc.terminate()
        for replica in reversed(leaving):
            stop_process(replica.proc)
        pods = ", ".join(r.pod for r in reversed(leaving))
        log.info("%s/%s: scaled down %d -> %d replicas (stopped %s)", *key, before, to, pods)

    def _write_status(self, key: Key, deployment: Obj) -> None:
        ready = len(self.replicas(namespace=key[0], name=key[1]))
        # Like the real controller, zero counts are omitted (null removes them in a merge patch).
        status = deployment_status(deployment=deployment, ready=ready, now=self.clock())
        current = deployment.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        self.apps.patch_namespaced_deployment_status(
            key[1],
            key[0],
            {"status": status},
            _content_type="application/merge-patch+json",
            _request_timeout=10,
        )

    def _publish(self, key: Key) -> None:
        """Tell Prometheus and the load generator the live replica set."""
        with self._lock:
            everything = [r for w in self._workloads.values() for r in w.replicas]
        mine = [r for r in everything if (r.namespace, r.deployment) == key]
        labels = [
            (r.address, {"namespace": r.namespace, "deployment": r.deployment, "pod": r.pod})
            for r in mine
        ]
        if self.on_targets is not None:
            self.on_targets(key[0], key[1], labels)
        if self.targets_file is not None:
            atomic_write(self.targets_file, "".join(f"{r.url}\n" for r in everything))

    # -- threads -----------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=self.resync_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.reconcile_all()
            except Exception:  # one bad pass must not stop the kubelet
                log.exception("resync failed")

    def _watch_loop(self) -> None:
        resource_version = ""
        while not self._stop.is_set():
            try:
                if not resource_version:
                    listing = json.loads(self._list(_request_timeout=10).data)
                    resource_version = listing["metadata"]["resourceVersion"]
                for event in self._watch_events(resource_version):
                    if event["type"] == "ERROR":
                        resource_version = ""  # e.g. 410 Gone: start again from a list
                        break
                    resource_version = event["object"]["metadata"]["resourceVersion"]
                    self._wake.set()
            except Exception as err:  # the resync loop still converges; retry shortly
                if self._stop.is_set():
                    return
                log.debug("watch interrupted: %s", err)
                resource_version = ""
                self._stop.wait(1.0)

    def _watch_events(self, resource_version: str) -> Iterator[Obj]:
        response = self._list(
            watch=True,
            resource_version=resource_version,
            timeout_seconds=60,
            allow_watch_bookmarks=False,
            _request_timeout=(10, 90),
        )
        self._watch_response = response
        if self._stop.is_set():  # stop() may have run before the response existed
            response.shutdown()
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            self._watch_response = None
            response.release_conn()
