"""aegisops.leader: two engines, one Lease, over HTTP against the Kubernetes API emulator
(RBAC on, kubernetes/rbac.yaml, the engine's service account), each with its own clock.

`step(now)` drives one acquire-or-renew per call, so takeovers are checked at exact
observed times; one test runs the real thread with short durations.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aegisops.config import KubernetesConfig
from aegisops.kube import KubeClient, LeaseInfo
from aegisops.leader import LeaderElector, LeaderParams, resolve_params
from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import wait_until

RBAC = Path(__file__).resolve().parents[2] / "kubernetes" / "rbac.yaml"
TOKEN = "engine-sa-token"
ENGINE_USER = "system:serviceaccount:aegisops:aegisops-engine"
NS, LEASE = "aegisops", "aegisops-engine"
WHERE = f"lease {NS}/{LEASE}"
T = 1_800_000_000.0  # 2027-01-15T08:00:00Z: every `now` below is T + seconds
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
    with KubeAPIServer(tls=True, rbac_files=[RBAC], tokens={TOKEN: ENGINE_USER}) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield server


@pytest.fixture
def kube(api: KubeAPIServer, tmp_path: Path) -> Iterator[KubeClient]:
    env = api.incluster_files(tmp_path / "sa", token=TOKEN)
    config = KubernetesConfig(
        mode="incluster",
        kubeconfig=None,
        serviceaccount_dir=str(tmp_path / "sa"),
        timeout_seconds=5,
    )
    with KubeClient(config=config, environ=env) as client:
        yield client
    api.clear_faults()
    if api.objects("leases", NS):
        api.delete("leases", NS, LEASE)
    api.clear_requests()


def elector(kube: Any, identity: str, *, clock: Callable[[], float] = lambda: T) -> LeaderElector:
    return LeaderElector(kube=kube, params=PARAMS, identity=identity, clock=clock)


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
    a, b = elector(kube, "a"), elector(kube, "b")
    for t in range(0, 61, 5):
        assert a.step(T + t) is True
        assert b.step(T + t + 1) is False
        assert a.is_leader(T + t + 1) and not b.is_leader(T + t + 1)
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
    a = elector(kube, "a")
    assert a.step(T)
    assert a.is_leader(T + 9.9)  # 15 s lease - 5 s renew period
    assert not a.is_leader(T + 10)


def test_takeover_only_after_the_duration_without_renewal_by_the_followers_clock(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = elector(kube, "a"), elector(kube, "b")
    assert a.step(T)
    assert not b.step(T + 100)  # b's clock is far ahead: observed time, not renewTime, counts
    assert not b.step(T + 114.9)
    assert b.step(T + 115)
    assert lease(api) == {
        "holderIdentity": "b",
        "leaseDurationSeconds": 15,
        "acquireTime": at(115),
        "renewTime": at(115),
        "leaseTransitions": 1,
    }
    assert not a.step(T + 12)  # a comes back: it is b's now
    assert lines(caplog) == [
        f"became leader ({WHERE}, identity a)",
        f"following a ({WHERE})",
        f"became leader ({WHERE}, identity b)",
        f"lost leadership ({WHERE}, identity a): b holds it",
        f"following b ({WHERE})",
    ]


def test_release_on_stop_lets_the_follower_acquire_at_once(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = elector(kube, "a", clock=lambda: T + 3), elector(kube, "b")
    assert a.step(T)
    assert not b.step(T + 1)
    a.stop(release=True)
    assert not a.is_leader(T + 3)
    [release] = api.requests(verb="update")
    assert release.body["spec"] == {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "leaseTransitions": 0,
        "acquireTime": at(3),
        "renewTime": at(3),
    }
    assert b.step(T + 2)  # long before a's 15 s would have run out
    assert lease(api)["holderIdentity"] == "b"
    assert lease(api)["leaseTransitions"] == 1
    assert f"released {WHERE} (identity a)" in lines(caplog)


class Racing:
    """The Lease calls of a KubeClient, letting `rival` step just before each write:
    the rival's write lands between this elector's read and its own write."""

    def __init__(self, kube: KubeClient, rival: Callable[[], object]) -> None:
        self._kube, self._rival = kube, rival

    def get_lease(self, *, namespace: str, name: str) -> LeaseInfo:
        return self._kube.get_lease(namespace=namespace, name=name)

    def create_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo:
        self._rival()
        return self._kube.create_lease(namespace=namespace, name=name, lease=lease)

    def replace_lease(self, *, namespace: str, name: str, lease: LeaseInfo) -> LeaseInfo:
        self._rival()
        return self._kube.replace_lease(namespace=namespace, name=name, lease=lease)


def test_a_409_on_a_race_makes_the_loser_a_follower(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    a = elector(kube, "a")
    b = elector(Racing(kube, lambda: a.step(T)), "b")
    assert not b.step(T)  # both saw no Lease; a created it first: 409 AlreadyExists
    assert [(e.verb, e.code) for e in api.requests(verb="create")] == [
        ("create", 201),
        ("create", 409),
    ]
    # Later the Lease has expired for both; a renews between b's read and b's write.
    a_late = elector(kube, "a")  # a fresh observer, as after a restart with the same identity
    b = elector(Racing(kube, lambda: a_late.step(T + 40)), "b")
    assert not b.step(T + 20)  # first sight of the record
    assert not b.step(T + 35)  # expired by b's clock, but a renews first: 409 Conflict
    assert [e.code for e in api.requests(verb="update")] == [200, 409]
    assert lease(api)["holderIdentity"] == "a"
    assert not b.is_leader(T + 35)
    assert lines(caplog) == [
        f"became leader ({WHERE}, identity a)",  # a, creating the Lease in b's race
        f"following a ({WHERE})",  # the second b, on first sight
        f"became leader ({WHERE}, identity a)",  # a_late, renewing in b's race
    ]


def test_api_faults_keep_a_follower_and_end_a_leadership_that_cannot_renew(
    api: KubeAPIServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    b = elector(kube, "b")
    api.inject(verb="get", path="/leases/", status=403, times=None)
    assert [b.step(T + t) for t in (0, 5, 10)] == [False, False, False]
    api.clear_faults()
    assert lines(caplog) == [
        f"{WHERE}: get leases {NS}/{LEASE}: 403 Forbidden: "
        'leases.coordination.k8s.io "aegisops-engine" is forbidden: User '
        f'"{ENGINE_USER}" cannot get resource "leases" in API group "coordination.k8s.io" '
        'in the namespace "aegisops" '
        "(missing permission: get leases in coordination.k8s.io, namespace aegisops)"
    ]  # once per kind, not once per step
    caplog.clear()

    a = elector(kube, "a")
    assert a.step(T)
    api.inject(verb="get", path="/leases/", status=503, times=None)
    assert a.step(T + 5)  # the last renewal (T) is still young enough
    assert not a.step(T + 10)
    assert not a.step(T + 15)
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
    assert a.step(T + 16)  # nobody took it: a renews and leads again
    assert lease(api)["acquireTime"] == at(0)


def test_the_thread_takes_over_after_the_holder_stops_without_release(
    api: KubeAPIServer, kube: KubeClient
) -> None:
    fast = LeaderParams(
        lease_name=LEASE,
        namespace=NS,
        identity="a",
        lease_duration_seconds=1,
        renew_every_seconds=0.2,
    )
    a = LeaderElector(kube=kube, params=fast)
    b = LeaderElector(kube=kube, params=fast, identity="b")
    a.start()
    try:
        wait_until(a.is_leader, timeout=10, message="a leads")
        b.start()
        assert not b.is_leader()
        a.stop(release=False)
        assert not a.is_leader()  # stopped: it no longer acts, though the Lease is still its
        wait_until(b.is_leader, timeout=10, interval=0.05, message="b takes over")
    finally:
        a.stop(release=False)
        b.stop(release=True)
    assert lease(api)["leaseTransitions"] == 1
    assert lease(api)["holderIdentity"] == ""  # b released it on stop


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
    assert solo.step(T) and solo.is_leader(T)
    solo.stop()
    assert api.requests(resource="leases") == []
