"""Leader election on a coordination.k8s.io/v1 Lease: of all engine replicas, exactly one acts.

Semantics are client-go's (k8s.io/client-go/tools/leaderelection): a follower takes the
Lease over only when its record has not changed for its `leaseDurationSeconds` (or our
`lease_duration_seconds`, whichever is longer) by the follower's *own* clock (observed
time: no clock skew between pods is assumed, the `renewTime` written by another pod is
never compared with ours); `leaseTransitions`
counts holder changes; `acquireTime` is kept on every renewal; on shutdown the holder
releases the Lease by clearing `holderIdentity`, so a rolling update hands over at once
instead of after a full lease duration. Every write is a PUT carrying the
resourceVersion that was read: of two racing engines, one gets 409 and stays a follower.

Two clocks, both injectable: every expiry and freshness decision uses a monotonic clock
(`time.monotonic`: an NTP step of the wall clock cannot make a follower take over early, nor
a leader keep acting late); the wall clock (`time.time`) only stamps the `acquireTime` and
`renewTime` written into the Lease, which nobody compares with their own clock.

`is_leader()` is stricter than "holds the Lease": the last successful renewal must be
younger than the lease duration minus one renew period, so a leader that cannot reach
the API server stops acting before anyone else can take over.

Why not `kubernetes.leaderelection`: its LeaseLock builds `client.CoordinationV1Api()`
on the library's global default client (whatever `load_*_config` set up, no per-call
timeout: a hung API server hangs the elector, and it bypasses our no-retry client);
`LeaderElection.run()` loops until leadership is lost and cannot be stopped from outside
(SIGTERM would wait for it); and it never releases the Lease on shutdown.

The thread never raises: every `KubeError` is logged once per kind (until a step works
again) and the elector stays a follower, or loses leadership when it cannot renew in time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aegisops.kube import Conflict, KubeError, LeaseInfo, NotFound

log = logging.getLogger(__name__)

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeaseApi(Protocol):
    """The three Lease calls of `aegisops.kube.KubeClient` the elector needs."""

    def get_lease(self, *, namespace: str, name: str) -> LeaseInfo: ...
    def create_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo: ...
    def replace_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo: ...


@dataclass(frozen=True)
class LeaderParams:
    """Config section `leader_election`, with namespace and identity already resolved."""

    enabled: bool = True
    lease_name: str = "aegisops-engine"
    namespace: str = "aegisops"
    identity: str = ""
    lease_duration_seconds: float = 15
    renew_every_seconds: float = 5

    def __post_init__(self) -> None:
        for key in ("lease_name", "namespace"):
            if not getattr(self, key):
                raise ValueError(f"leader_election.{key}: must not be empty")
        for key in ("lease_duration_seconds", "renew_every_seconds"):
            if not getattr(self, key) > 0:
                raise ValueError(f"leader_election.{key}: must be > 0, got {getattr(self, key)}")
        if self.renew_every_seconds >= self.lease_duration_seconds:
            raise ValueError(
                "leader_election.renew_every_seconds: must be < lease_duration_seconds "
                f"({self.lease_duration_seconds}), got {self.renew_every_seconds}"
            )

    def check_kube_timeout(self, timeout_seconds: float) -> None:
        """For the config's cross-field check: one Lease call may take up to
        `kubernetes.timeout_seconds`; a renewal that can take the whole lease duration minus
        one renew period could never keep the lead."""
        if not self.enabled:
            return
        window = self.lease_duration_seconds - self.renew_every_seconds
        if timeout_seconds >= window:
            raise ValueError(
                "kubernetes.timeout_seconds: must be < leader_election.lease_duration_seconds "
                f"- leader_election.renew_every_seconds ({window:g}), got {timeout_seconds:g}"
            )


def resolve_params(
    *,
    enabled: bool = True,
    lease_name: str = "aegisops-engine",
    namespace: str | None = None,
    identity: str | None = None,
    lease_duration_seconds: float = 15,
    renew_every_seconds: float = 5,
    environ: Mapping[str, str],
    namespace_file: Path = SA_NAMESPACE_FILE,
    hostname: str | None = None,
    pid: int | None = None,
) -> LeaderParams:
    """LeaderParams with the defaults filled in: namespace from `POD_NAMESPACE`, else the
    service account's namespace file, else `aegisops`; identity `POD_NAME` (else the
    hostname) plus `-<pid>`."""
    if namespace is None:
        namespace = environ.get("POD_NAMESPACE") or _read(namespace_file) or "aegisops"
    if identity is None:
        base = environ.get("POD_NAME") or hostname or socket.gethostname()
        identity = f"{base}-{os.getpid() if pid is None else pid}"
    return LeaderParams(
        enabled=enabled,
        lease_name=lease_name,
        namespace=namespace,
        identity=identity,
        lease_duration_seconds=lease_duration_seconds,
        renew_every_seconds=renew_every_seconds,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


class LeaderElector:
    """Acquire or renew the Lease every `renew_every_seconds` (a thread, or `step` in tests).

    With `params.enabled` false there is no Lease: this engine always leads (one replica),
    `start`/`stop` do nothing and no Kubernetes call is made.
    """

    def __init__(
        self,
        *,
        kube: LeaseApi,
        params: LeaderParams,
        identity: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._kube = kube
        self._params = params
        self.identity = identity or params.identity
        if not self.identity:
            raise ValueError("leader_election.identity: must not be empty")
        self._clock = clock  # monotonic: observed and renewed times, expiry, freshness
        self._wall = wall_clock  # only for the acquireTime/renewTime written into the Lease
        self._lease = f"{params.namespace}/{params.lease_name}"
        self._lock = threading.Lock()  # one step (or the release) at a time
        self._state = threading.Lock()  # _stopped and _renewed_at change together
        self._stopped = False  # after stop(): never leads again, late renewals are ignored
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observed: LeaseInfo | None = None  # the record as last read or written
        self._observed_at = 0.0  # when it last changed, by our monotonic clock
        self._renewed_at: float | None = None  # our last successful acquire/renew
        self._leading = False  # what was last logged: leader or not
        self._following = ""  # the holder last logged as followed
        self._errors_logged: set[str] = set()

    # -- public ----------------------------------------------------------------------

    def start(self) -> None:
        if self._params.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
            self._thread.start()

    def is_leader(self) -> bool:
        if not self._params.enabled:
            return True
        # No lock: a step may be waiting on the API server; one float read is atomic.
        return self._fresh(self._clock())

    def step(self) -> bool:
        """One acquire-or-renew; True when this engine leads afterwards."""
        if not self._params.enabled:
            return True
        with self._lock:
            if self._stopped:
                return False
            try:
                why = self._try(self._clock())
                self._errors_logged.clear()
            except KubeError as err:
                why = f"cannot renew: {err}"
                self._log_error(err)
            if self._stopped:  # stop() came while this step waited on the API server
                why = "stopped"
            leading = self._fresh(self._clock())
            self._announce(leading=leading, why=why)
            return leading

    def stop(self, *, release: bool = True, timeout: float | None = None) -> None:
        """Stop leading at once (a renewal still in flight is ignored when it lands), end
        the thread and, with `release`, hand the Lease over (otherwise another engine takes
        it after the lease duration). `timeout` bounds the wait for an in-flight step: when
        it is not done in time the release is skipped (logged), never waited for."""
        if not self._params.enabled:
            return
        with self._state:
            self._stopped = True
            self._renewed_at = None
        self._stop.set()
        # A real wait, not election time: the injected clock has no say in it.
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        if release:
            left = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._lock.acquire(timeout=left):
                log.warning(
                    "lease %s: not released: a renewal is still in flight after %ss",
                    self._lease,
                    timeout,
                )
                return
            try:
                self._release()
            finally:
                self._lock.release()

    # -- one step --------------------------------------------------------------------

    def _try(self, started: float) -> str:
        """Read, then acquire or renew if we may; returns why we do not lead (or "").
        A renewal counts from `started`, read before the GET: every other engine sees the
        record we write later than that, so our lead ends before its expiry can."""
        params = self._params
        try:
            current = self._kube.get_lease(namespace=params.namespace, name=params.lease_name)
        except NotFound:
            return self._create(started)
        now = self._clock()  # as client-go's observedTime: when the GET returned
        self._observe(current, now)
        other = current.holder and current.holder != self.identity
        # The holder's own leaseDurationSeconds counts too (an engine configured longer).
        lasts = max(current.duration_seconds, params.lease_duration_seconds)
        if other and self._observed_at + lasts > now:
            self._renewed_at = None
            return f"{current.holder} holds it"
        mine = current.holder == self.identity
        wall = self._wall()
        record = LeaseInfo(
            holder=self.identity,
            duration_seconds=_seconds(params.lease_duration_seconds),
            acquire_time=current.acquire_time if mine and current.acquire_time else _at(wall),
            renew_time=_at(wall),
            transitions=current.transitions if mine else current.transitions + 1,
            resource_version=current.resource_version,
        )
        return self._claim(
            write=self._kube.replace_lease, record=record, started=started, verb="wrote"
        )

    def _create(self, started: float) -> str:
        params = self._params
        wall = self._wall()
        record = LeaseInfo(
            holder=self.identity,
            duration_seconds=_seconds(params.lease_duration_seconds),
            acquire_time=_at(wall),
            renew_time=_at(wall),
            transitions=0,
        )
        return self._claim(
            write=self._kube.create_lease, record=record, started=started, verb="created"
        )

    def _claim(
        self, *, write: Callable[..., LeaseInfo], record: LeaseInfo, started: float, verb: str
    ) -> str:
        """Write `record` (create or replace); a 409: another engine `verb` it first."""
        params = self._params
        try:
            written = write(namespace=params.namespace, name=params.lease_name, lease=record)
        except Conflict:
            self._renewed_at = None
            return f"another engine {verb} the lease first (409)"
        self._won(written, started)
        return ""

    def _observe(self, record: LeaseInfo, now: float) -> None:
        if record != self._observed:
            self._observed, self._observed_at = record, now

    def _won(self, record: LeaseInfo, started: float) -> None:
        # Observed even when stopped: a release needs the record's resourceVersion.
        self._observe(record, self._clock())
        with self._state:
            if not self._stopped:  # a renewal that lands after stop() does not lead
                self._renewed_at = started

    def _fresh(self, now: float) -> bool:
        params = self._params
        window = params.lease_duration_seconds - params.renew_every_seconds
        renewed = self._renewed_at
        return not self._stopped and renewed is not None and now - renewed < window

    # -- logs ------------------------------------------------------------------------

    def _announce(self, *, leading: bool, why: str) -> None:
        if leading and not self._leading:
            log.info("became leader (lease %s, identity %s)", self._lease, self.identity)
            self._following = ""
        elif not leading and self._leading:
            log.warning(
                "lost leadership (lease %s, identity %s): %s",
                self._lease,
                self.identity,
                why or "no renewal in time",
            )
        self._leading = leading
        holder = self._observed.holder if self._observed else ""
        if not leading and holder and holder != self.identity and holder != self._following:
            log.info("following %s (lease %s)", holder, self._lease)
            self._following = holder

    def _log_error(self, err: KubeError) -> None:
        kind = type(err).__name__
        if kind not in self._errors_logged:
            self._errors_logged.add(kind)
            log.warning("lease %s: %s", self._lease, err)

    # -- thread and release ----------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # never out of the thread: the next step tries again
                log.exception("leader election step failed (lease %s)", self._lease)
            self._stop.wait(self._params.renew_every_seconds)

    def _release(self) -> None:
        """Clear holderIdentity (the caller holds the step lock)."""
        params = self._params
        now = self._wall()
        held = self._observed
        if held is None or held.holder != self.identity:
            return
        record = LeaseInfo(
            holder="",
            duration_seconds=1,
            acquire_time=_at(now),
            renew_time=_at(now),
            transitions=held.transitions,
            resource_version=held.resource_version,
        )
        self._leading = False
        try:
            self._observed = self._kube.replace_lease(
                namespace=params.namespace, name=params.lease_name, lease=record
            )
        except Exception as err:  # a KubeError, or anything else: stop() never raises
            log.warning("lease %s: not released: %s", self._lease, err)
            return
        log.info("released lease %s (identity %s)", self._lease, self.identity)


def _at(now: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(now, dt.UTC)


def _seconds(value: float) -> int:
    return max(1, round(value))
