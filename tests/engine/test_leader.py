"""aegisops.leader: two engines, one Lease, over HTTP against the Kubernetes API emulator
(RBAC on, kubernetes/rbac.yaml, the engine's service account), each with its own clock.

Each engine has its own monotonic clock that the test moves (`Engine.step(t)` sets it to t
seconds, then runs one acquire-or-renew), and a wall clock at T + t that only stamps the
Lease, so takeovers are checked at exact observed times; the thread tests use real clocks
with short durations.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_fakes import ENGINE_USER, NS, RBAC, api_server, in_pod

from aegisops.kube import KubeClient, KubeUnavailable, LeaseInfo
from aegisops.leader import LeaderElector, LeaderParams, resolve_params
from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import wait_until

LEASE = "aegisops-engine"
WHERE = f"lease {NS}/{LEASE}"
T = 1_800_000_000.0  # 2027-01-15T08:00:00Z: the wall clock reads T + the monotonic one
PARAMS = LeaderParams(
    lease_name=LEASE,
    namespace=NS,
    identity="unused",
    lease_duration_seconds=15,
    renew_every_seconds=5,
)


def at(seconds: float) -> str:
    """The MicroTime the Lease holds for T + seconds."""
    return dt.datetime.fromtimestamp(T + seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def api() -> Iterator[KubeAPIServer]:
    with api_server([RBAC]) as server:
        yield server


@pytest.fixture
def kube(api: KubeAPIServer, tmp_path: Path) -> Iterator[KubeClient]:
    with in_pod(api, tmp_path / "sa", mode="incluster") as client:
        yield client
    api.clear_faults()
    if api.objects("leases", NS):
        api.delete("leases", NS, LEASE)
    api.clear_requests()


class Engine:
    """One elector with its own clocks: monotonic `t`, wall `T + t + wall_step`."""

    def __init__(self, kube: Any, identity: str, *, params: LeaderParams = PARAMS) -> None:
        self.t = 0.0
        self.wall_step = 0.0  # an NTP step of this engine's wall clock
        self.elector = LeaderElector(
            kube=kube,
            params=params,
            identity=identity,
            clock=lambda: self.t,
            wall_clock=lambda: T + self.t + self.wall_step,
        )

    def step(self, t: float) -> bool:
        self.t = t
        return self.elector.step()

    def is_leader(self, t: float) -> bool:
        self.t = t
        return self.elector.is_leader()


def lease(api: KubeAPIServer) -> dict[str, Any]:
    spec: dict[str, Any] = api.get("leases", NS, LEASE)["spec"]
    return spec


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "aegisops.leader"]


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aegisops.leader")


def test_exactly_one_leads_and_renewals_keep_it(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Engine(kube, "a"), Engine(kube, "b")
    for t in range(0, 61, 5):
        assert a.step(t) is True
        assert b.step(t + 1) is False
        assert a.is_leader(t + 1) and not b.is_leader(t + 1)
    assert lease(api) == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "acquireTime": at(0),  # kept on every renewal
        "renewTime": at(60),
        "leaseTransitions": 0,
    }
    assert lines(caplog) == [f"became leader ({WHERE}, identity a)", f"following a ({WHERE})"]
    [create] = api.requests(verb="create")
    assert create.body["spec"] == {
        "holderIdentity": "a",
        "leaseDurationSeconds": 15,
        "leaseTransitions": 0,
        "acquireTime": at(0),
        "renewTime": at(0),
    }
    # b only reads; a renews with a PUT carrying the version it read as the precondition.
    updates = api.requests(verb="update")
    assert len(updates) == 12 and all(e.body["metadata"]["resourceVersion"] for e in updates)


def test_is_leader_ends_a_renew_period_before_the_lease_could_be_taken(
    kube: KubeClient,
) -> None:
    a = Engine(kube, "a")
    assert a.step(0)
    assert a.is_leader(9.9)  # 15 s lease - 5 s renew period
    assert not a.is_leader(10)


def test_takeover_only_after_the_duration_without_renewal_by_the_followers_clock(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Engine(kube, "a"), Engine(kube, "b")
    assert a.step(0)
    assert not b.step(100)  # b's clock is far ahead: observed time, not renewTime, counts
    assert not b.step(114.9)
    assert b.step(115)
    assert lease(api) == {
        "holderIdentity": "b",
        "leaseDurationSeconds": 15,
        "acquireTime": at(115),
        "renewTime": at(115),
        "leaseTransitions": 1,
    }
    assert not a.step(12)  # a comes back: it is b's now
    assert lines(caplog) == [
        f"became leader ({WHERE}, identity a)",
        f"following a ({WHERE})",
        f"became leader ({WHERE}, identity b)",
        f"lost leadership ({WHERE}, identity a): b holds it",
        f"following b ({WHERE})",
    ]


def test_a_wall_clock_step_changes_the_stamps_but_never_the_expiry(
    api: KubeAPIServer, kube: KubeClient
) -> None:
    a, b = Engine(kube, "a"), Engine(kube, "b")
    assert a.step(0)
    assert not b.step(1)
    b.wall_step = 3600.0  # NTP steps b's wall clock an hour ahead: b's monotonic clock runs on
    a.wall_step = -3600.0  # and a's an hour back
    assert not b.step(6)  # a's record is 5 s old by b's monotonic clock: not expired
    assert a.is_leader(9.9) and not a.is_leader(10)  # a's freshness ignores its wall clock
    assert a.step(10)
    assert lease(api)["renewTime"] == at(10 - 3600)  # only the stamp follows the wall clock
    assert not b.step(11)  # b sees a's renewal at 11: it expires at 26 by b's monotonic clock
    assert not b.step(25.9)
    assert b.step(26)
    assert lease(api)["acquireTime"] == at(26 + 3600)


class LeaseProxy:
    """The Lease calls of a KubeClient, passed through; `before` runs ahead of each one
    ("get", "create" or "replace"): subclasses change only what differs."""

    def __init__(self, kube: KubeClient) -> None:
        self._kube = kube

    def before(self, call: str) -> None:
        """Nothing by default."""

    def get_lease(self, *, namespace: str, name: str) -> LeaseInfo:
        self.before("get")
        return self._kube.get_lease(namespace=namespace, name=name)

    def create_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo:
        self.before("create")
        return self._kube.create_lease(namespace=namespace, name=name, lease=lease)

    def replace_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo:
        self.before("replace")
        return self._kube.replace_lease(namespace=namespace, name=name, lease=lease)


class SlowRead(LeaseProxy):
    """The Lease calls of a KubeClient; the next GET first runs `during` (what happens
    while the request is on its way), then reads."""

    def __init__(self, kube: KubeClient) -> None:
        super().__init__(kube)
        self.during: Callable[[], object] | None = None

    def before(self, call: str) -> None:
        if call != "get":
            return
        during, self.during = self.during, None
        if during is not None:
            during()


def test_a_record_is_observed_when_the_read_returns_not_when_it_was_sent(
    kube: KubeClient,
) -> None:
    slow = SlowRead(kube)
    leader, follower = Engine(kube, "l"), Engine(slow, "f")
    assert leader.step(0)

    def meanwhile() -> None:  # the follower's GET takes 11 s; the leader renews at 111
        assert leader.step(111)
        follower.t = 111

    slow.during = meanwhile
    assert not follower.step(100)
    assert leader.is_leader(120.9)
    assert not follower.step(120.9)  # observed at 111, not 100: not expired before 126
    assert not follower.step(125.9)
    assert follower.step(126)


def test_the_kube_timeout_must_leave_time_to_renew() -> None:
    PARAMS.check_kube_timeout(9.5)  # 15 s lease - 5 s renew period
    with pytest.raises(ValueError) as err:
        PARAMS.check_kube_timeout(10)
    assert str(err.value) == (
        "kubernetes.timeout_seconds: must be < leader_election.lease_duration_seconds "
        "- leader_election.renew_every_seconds (10), got 10"
    )
    LeaderParams(enabled=False).check_kube_timeout(60)  # no Lease, no renewal


def test_a_follower_waits_for_the_holders_own_lease_duration(
    api: KubeAPIServer, kube: KubeClient
) -> None:
    patient = dataclasses.replace(PARAMS, lease_duration_seconds=60)
    old, new = Engine(kube, "old", params=patient), Engine(kube, "new")
    assert old.step(0)
    assert lease(api)["leaseDurationSeconds"] == 60
    assert not new.step(1)
    assert not new.step(60.9)  # not after new's own 15 s: the record says 60
    assert old.is_leader(54.9)
    assert new.step(61)
    assert lease(api)["leaseDurationSeconds"] == 15


def test_release_on_stop_lets_the_follower_acquire_at_once(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Engine(kube, "a"), Engine(kube, "b")
    assert a.step(0)
    assert not b.step(1)
    a.t = 3
    a.elector.stop(release=True)
    assert not a.is_leader(3)
    [release] = api.requests(verb="update")
    assert release.body["spec"] == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "leaseTransitions": 0,
        "acquireTime": at(3),
        "renewTime": at(3),
    }
    assert b.step(2)  # long before a's 15 s would have run out
    assert lease(api)["holderIdentity"] == "b"
    assert lease(api)["leaseTransitions"] == 1
    assert f"released {WHERE} (identity a)" in lines(caplog)


class Gated(LeaseProxy):
    """The Lease calls of a KubeClient; while `hold` is set, a PUT waits (after it is sent:
    it lands on the server) until `go` is set, `landed` tells the test it is in flight."""

    def __init__(self, kube: KubeClient) -> None:
        super().__init__(kube)
        self.hold, self.landed, self.go = threading.Event(), threading.Event(), threading.Event()

    def replace_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo:
        written = super().replace_lease(namespace=namespace, name=name, lease=lease)
        if self.hold.is_set():
            self.landed.set()
            assert self.go.wait(timeout=30)
        return written


def renewal_in_flight(a: Engine, gate: Gated) -> threading.Thread:
    """a leads; its next renewal (at t=5) is written but has not returned yet."""
    assert a.step(0)
    gate.hold.set()
    renewing = threading.Thread(target=a.step, args=(5,))
    renewing.start()
    assert gate.landed.wait(timeout=30)
    return renewing


def test_stop_ends_leadership_though_a_renewal_lands_after_it(
    api: KubeAPIServer, kube: KubeClient
) -> None:
    gate = Gated(kube)
    a = Engine(gate, "a")
    renewing = renewal_in_flight(a, gate)
    a.elector.stop(release=False, timeout=0)
    assert not a.elector.is_leader()
    gate.go.set()
    renewing.join()
    assert not a.is_leader(5)  # the late renewal is ignored
    assert not a.step(6)  # and a stopped elector never steps again
    assert lease(api)["renewTime"] == at(5)


def test_stop_skips_a_release_it_cannot_make_within_its_timeout(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    gate = Gated(kube)
    a = Engine(gate, "a")
    renewing = renewal_in_flight(a, gate)
    stopping = threading.Thread(target=a.elector.stop, kwargs={"release": True, "timeout": 0})
    stopping.start()
    stopping.join(timeout=30)
    released = not stopping.is_alive()  # before the renewal returns: never waited for
    gate.go.set()
    renewing.join()
    stopping.join()
    assert released
    assert [e.body["spec"]["holderIdentity"] for e in api.requests(verb="update")] == ["a"]
    assert lines(caplog) == [
        f"became leader ({WHERE}, identity a)",
        f"{WHERE}: not released: a renewal is still in flight after 0s",
        f"lost leadership ({WHERE}, identity a): stopped",  # logged as the renewal returns
    ]
    assert not a.elector.is_leader()


class Racing(LeaseProxy):
    """The Lease calls of a KubeClient, letting `rival` step just before each write:
    the rival's write lands between this elector's read and its own write."""

    def __init__(self, kube: KubeClient, rival: Callable[[], object]) -> None:
        super().__init__(kube)
        self._rival = rival

    def before(self, call: str) -> None:
        if call != "get":
            self._rival()


def test_a_409_on_a_race_makes_the_loser_a_follower(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a = Engine(kube, "a")
    b = Engine(Racing(kube, lambda: a.step(0)), "b")
    assert not b.step(0)  # both saw no Lease; a created it first: 409 AlreadyExists
    assert [(e.verb, e.code) for e in api.requests(verb="create")] == [
        ("create", 201),
        ("create", 409),
    ]
    # Later the Lease has expired for both; a renews between b's read and b's write.
    a_late = Engine(kube, "a")  # a fresh observer, as after a restart with the same identity
    b = Engine(Racing(kube, lambda: a_late.step(40)), "b")
    assert not b.step(20)  # first sight of the record
    assert not b.step(35)  # expired by b's clock, but a renews first: 409 Conflict
    assert [e.code for e in api.requests(verb="update")] == [200, 409]
    assert lease(api)["holderIdentity"] == "a"
    assert not b.is_leader(35)
    assert lines(caplog) == [
        f"became leader ({WHERE}, identity a)",  # a, creating the Lease in b's race
        f"following a ({WHERE})",  # the second b, on first sight
        f"became leader ({WHERE}, identity a)",  # a_late, renewing in b's race
    ]


def test_api_faults_keep_a_follower_and_end_a_leadership_that_cannot_renew(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    b = Engine(kube, "b")
    api.inject(verb="get", path="/leases/", status=403, times=None)
    assert [b.step(t) for t in (0, 5, 10)] == [False, False, False]
    api.clear_faults()
    assert lines(caplog) == [
        f"{WHERE}: get leases {NS}/{LEASE}: 403 Forbidden: "
        'leases.coordination.k8s.io "aegisops-engine" is forbidden: User '
        f'"{ENGINE_USER}" cannot get resource "leases" in API group "coordination.k8s.io" '
        'in the namespace "aegisops" '
        "(missing permission: get leases in coordination.k8s.io, namespace aegisops)"
    ]  # once per kind, not once per step
    caplog.clear()

    a = Engine(kube, "a")
    assert a.step(0)
    api.inject(verb="get", path="/leases/", status=503, times=None)
    assert a.step(5)  # the last renewal (T) is still young enough
    assert not a.step(10)
    assert not a.step(15)
    api.clear_faults()
    unavailable = (
        f"get leases {NS}/{LEASE}: 503 ServiceUnavailable: "
        "the server is currently unable to handle the request"
    )
    assert lines(caplog) == [
        f"became leader ({WHERE}, identity a)",
        f"{WHERE}: {unavailable}",
        f"lost leadership ({WHERE}, identity a): cannot renew: {unavailable}",
    ]
    assert a.step(16)  # nobody took it: a renews and leads again
    assert lease(api)["acquireTime"] == at(0)


FAST = LeaderParams(
    lease_name=LEASE, namespace=NS, identity="a", lease_duration_seconds=1, renew_every_seconds=0.2
)


class CutOff(LeaseProxy):
    """The Lease calls of a KubeClient: `error` (once, or while `cut` is set) instead."""

    def __init__(self, kube: KubeClient, error: Exception, *, once: bool = False) -> None:
        super().__init__(kube)
        self._error, self._once = error, once
        self.cut = threading.Event()
        if once:
            self.cut.set()

    def before(self, call: str) -> None:
        if self.cut.is_set():
            if self._once:
                self.cut.clear()
            raise self._error


def handed_over(a: LeaderElector, b: LeaderElector) -> Callable[[], bool]:
    """A wait_until predicate: b leads; at every poll, never both. b is read first: a can
    only stop leading, so a leading at the second read led at the first one too."""

    def poll() -> bool:
        b_leads = b.is_leader()
        assert not (b_leads and a.is_leader()), "two leaders"
        return b_leads

    return poll


@pytest.mark.parametrize("how", ["stopped without release", "cut off from the API server"])
def test_the_thread_takes_over_and_never_two_lead(
    api: KubeAPIServer, kube: KubeClient, how: str
) -> None:
    link = CutOff(kube, KubeUnavailable("get leases: connection refused"))
    a = LeaderElector(kube=link, params=FAST)
    b = LeaderElector(kube=kube, params=FAST, identity="b")
    a.start()
    try:
        wait_until(a.is_leader, timeout=10, message="a leads")
        b.start()
        assert not b.is_leader()
        if how == "stopped without release":
            a.stop(release=False)
            assert not a.is_leader()  # stopped: it no longer acts, though the Lease is its
        else:
            link.cut.set()  # a's thread runs on, its renewals fail
        wait_until(handed_over(a, b), timeout=10, interval=0.01, message="b takes over")
    finally:
        a.stop(release=False)
        b.stop(release=True)
    assert lease(api)["leaseTransitions"] == 1
    assert lease(api)["holderIdentity"] == ""  # b released it on stop


def test_an_error_that_is_not_a_kube_error_leaves_the_thread_alive(
    kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a = LeaderElector(kube=CutOff(kube, RuntimeError("boom"), once=True), params=FAST)
    a.start()
    try:
        wait_until(a.is_leader, timeout=10, message="a leads on its next step")
    finally:
        a.stop(release=True)
    [failed] = [r for r in caplog.records if r.exc_info]
    assert failed.getMessage() == f"leader election step failed ({WHERE})"
    assert repr(failed.exc_info[1]) == "RuntimeError('boom')"  # type: ignore[index]
    assert lines(caplog)[:2] == [
        f"leader election step failed ({WHERE})",
        f"became leader ({WHERE}, identity a)",
    ]


# -- params ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"renew_every_seconds": 15},
            "leader_election.renew_every_seconds: must be < lease_duration_seconds (15), got 15",
        ),
        (
            {"lease_duration_seconds": 0},
            "leader_election.lease_duration_seconds: must be > 0, got 0",
        ),
        ({"lease_name": ""}, "leader_election.lease_name: must not be empty"),
    ],
)
def test_params_are_validated_naming_the_key(changes: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {
        "lease_name": LEASE,
        "namespace": NS,
        "identity": "a",
        "lease_duration_seconds": 15,
        "renew_every_seconds": 5,
    }
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        LeaderParams(**(values | changes))


def test_resolved_defaults_come_from_the_downward_api_then_the_pod_files(tmp_path: Path) -> None:
    ns_file = tmp_path / "namespace"
    pod = {"POD_NAME": "engine-7d9-x2", "POD_NAMESPACE": "ops"}
    resolved = resolve_params(environ=pod, namespace_file=ns_file, hostname="host", pid=7)
    assert (resolved.namespace, resolved.identity) == ("ops", "engine-7d9-x2-7")
    assert (resolved.lease_name, resolved.lease_duration_seconds, resolved.renew_every_seconds) == (
        "aegisops-engine",
        15,
        5,
    )
    ns_file.write_text("shop\n")
    resolved = resolve_params(environ={}, namespace_file=ns_file, hostname="host", pid=7)
    assert (resolved.namespace, resolved.identity) == ("shop", "host-7")
    resolved = resolve_params(
        environ={}, namespace_file=tmp_path / "missing", hostname="host", pid=7
    )
    assert resolved.namespace == "aegisops"
    explicit = resolve_params(
        namespace="x", identity="me", environ=pod, namespace_file=ns_file, hostname="h", pid=1
    )
    assert (explicit.namespace, explicit.identity) == ("x", "me")


def test_disabled_election_always_leads_without_a_kubernetes_call(api: KubeAPIServer) -> None:
    off = LeaderParams(enabled=False, lease_name=LEASE, namespace=NS, identity="solo")
    solo = LeaderElector(kube=object(), params=off)  # type: ignore[arg-type]  # never called
    solo.start()
    assert solo.step() and solo.is_leader()
    solo.stop()
    assert api.requests(resource="leases") == []
