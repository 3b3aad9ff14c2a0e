"""Fakes at our own boundaries for the loop tests: PrometheusSource, KubeClient, Slack.

The detector and policy are the real, pure ones; time is injected; data is seeded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aegisops.config import Config, KubernetesConfig, parse_config
from aegisops.kube import Conflict, DeploymentInfo, HpaInfo, KubeClient, ScaleInfo
from aegisops.loop import Engine
from aegisops.prometheus import History, PrometheusUnavailable, Sample
from aegisops.selfmetrics import SelfMetrics
from sandbox.kubeapi import KubeAPIServer

KEY = "shop/web"
T0 = 1_800_000_000.0
BASELINE = 40
NORMAL = (10.0, 0.05, 25e6)
SURGE = (40.0, 0.6, 25e6)
ACTING = ["hpas", "get_deployment", "get_scale", "patch_annotations", "patch_scale"]
"""The calls one action costs, in order: HPA check, fresh Deployment and Scale, record, scale."""


def make_config(**overrides: Any) -> Config:
    raw: dict[str, Any] = {
        "poll_interval_seconds": 1,
        "prometheus": {"url": "http://127.0.0.1:9", "history_lookback_seconds": 100},
        "detector": {
            "baseline_samples": BASELINE,
            "cold_start_seconds": 0,
            "n_estimators": 40,
            "max_samples": 32,
            "seed": 3,
        },
        "policy": {"consecutive_anomalies": 3, "cooldown_seconds": 300},
        "targets": [{"namespace": "shop", "deployment": "web", "max_replicas": 4}],
        "server": {"port": 0},
    }
    raw.update(overrides)
    return parse_config(raw, env={})


def noisy(rng: np.random.Generator, centre: tuple[float, float, float]) -> np.ndarray:
    scale = np.array([0.4, 0.002, 2e4])
    return np.asarray(centre) + rng.normal(0.0, 1.0, 3) * scale


class FakeSource:
    """Stands in for PrometheusSource: a scripted profile per time, or an outage."""

    def __init__(
        self, *, history_samples: int = BASELINE + 10, seed: int = 1, keys: tuple[str, ...] = (KEY,)
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.history_samples = history_samples
        self.keys = keys
        self.surge_from = float("inf")
        self.surge = SURGE  # the profile from `surge_from` on
        self.down = False
        self.no_data: set[str] = set()  # workloads without series (a partial answer)
        self.calls: list[str] = []

    @property
    def targets(self) -> tuple[str, ...]:
        return self.keys

    @targets.setter
    def targets(self, keys: tuple[str, ...]) -> None:  # the engine's discovery sets them
        self.keys = keys

    def history(self, *, start: float, end: float, step: float) -> dict[str, History]:
        self.calls.append("history")
        if self.down:
            raise PrometheusUnavailable("query_range rps: cannot connect to Prometheus")
        n = self.history_samples
        t = np.arange(end - n * step, end, step)[:n] + step
        past = {}
        for key in self.keys:
            X = np.array([noisy(self.rng, NORMAL) for _ in range(n)]).reshape(n, 3)
            past[key] = History(timestamps=t, X=X)
        return past

    def sample(self, now: float) -> Sample:
        self.calls.append("sample")
        if self.down:
            raise PrometheusUnavailable("query rps: cannot connect to Prometheus at http://x")
        centre = self.surge if now >= self.surge_from else NORMAL
        values = {key: noisy(self.rng, centre) for key in self.keys}
        for key in self.no_data:
            values[key] = np.full(3, np.nan)
        return Sample(t=now, values=values)


@dataclass
class FakeKube:
    """Stands in for KubeClient: one Deployment's annotations, version and replicas."""

    annotations: dict[str, str] = field(default_factory=dict)
    replicas: int = 1
    rv: int = 7
    labels: dict[str, str] = field(default_factory=dict)
    hpa_names: set[str] = field(default_factory=set)
    hpa_min: int = 1
    ready: int | None = None  # readyReplicas; None: all replicas ready
    restarted_at: str | None = None  # the pod template's kubectl.kubernetes.io/restartedAt
    fail: dict[str, Exception] = field(default_factory=dict)
    fail_after: dict[str, Exception] = field(default_factory=dict)  # raised once it took effect
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def _call(self, name: str, arg: Any = None) -> None:
        self.calls.append((name, arg))
        if name in self.fail:
            raise self.fail.pop(name)

    def _done(self, name: str) -> None:
        """The write took effect; its answer may still be lost (a read timeout, a 504)."""
        if name in self.fail_after:
            raise self.fail_after.pop(name)

    def get_deployment(self, *, namespace: str, name: str) -> DeploymentInfo:
        self._call("get_deployment")
        return DeploymentInfo(
            annotations=dict(self.annotations),
            resource_version=str(self.rv),
            replicas=self.replicas,
            ready_replicas=self.replicas if self.ready is None else self.ready,
            restarted_at=self.restarted_at,
        )

    def get_scale(self, *, namespace: str, name: str) -> ScaleInfo:
        self._call("get_scale")
        return ScaleInfo(replicas=self.replicas, resource_version=str(self.rv))

    def hpas(self, *, namespace: str) -> dict[str, HpaInfo]:
        self._call("hpas")
        return {name: self.hpa_info(name) for name in self.hpa_names}

    def hpa_info(self, name: str) -> HpaInfo:
        return HpaInfo(
            name=f"{name}-hpa",
            min_replicas=self.hpa_min,
            max_replicas=6,
            resource_version=str(self.rv),
        )

    def patch_hpa_min(self, *, namespace: str, name: str, min_replicas: int) -> HpaInfo:
        self._call("patch_hpa_min", (name, min_replicas))
        self.hpa_min = min_replicas
        self._done("patch_hpa_min")
        return self.hpa_info(name.removesuffix("-hpa"))

    def restart(self, *, namespace: str, name: str, at: str) -> DeploymentInfo:
        self._call("restart", at)
        self.rv += 1
        self.restarted_at = at
        self._done("restart")
        return DeploymentInfo(
            annotations=dict(self.annotations),
            resource_version=str(self.rv),
            replicas=self.replicas,
        )

    def patch_annotations(
        self,
        *,
        namespace: str,
        name: str,
        annotations: Mapping[str, str | None],
        resource_version: str,
    ) -> DeploymentInfo:
        self._call("patch_annotations", dict(annotations))
        if resource_version != str(self.rv):
            raise Conflict("patch deployments shop/web: 409 Conflict")
        for key, value in annotations.items():
            if value is None:
                self.annotations.pop(key, None)
            else:
                self.annotations[key] = value
        self.rv += 1
        rv, replicas = str(self.rv), self.replicas
        return DeploymentInfo(
            annotations=dict(self.annotations), resource_version=rv, replicas=replicas
        )

    def patch_scale(self, *, namespace: str, name: str, replicas: int) -> ScaleInfo:
        self._call("patch_scale", replicas)
        self.replicas = replicas
        self.rv += 1
        self._done("patch_scale")
        return ScaleInfo(replicas=replicas, resource_version=str(self.rv))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@dataclass
class FakeNotifier:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, payload: Mapping[str, Any]) -> bool:
        self.sent.append(dict(payload))
        return True

    def texts(self) -> list[str]:
        return [p["text"] for p in self.sent]


@dataclass
class Rig:
    engine: Engine
    source: FakeSource
    kube: Any  # FakeKube, or MultiKube for several Deployments
    notifier: FakeNotifier
    metrics: SelfMetrics

    def passes(self, count: int, *, start: float) -> list[Any]:
        return [self.engine.run_pass(start + i) for i in range(count)]


@dataclass
class FakeLeader:
    """Stands in for LeaderElector: whether this engine holds the lease."""

    leader: bool = True

    def is_leader(self) -> bool:
        return self.leader


def rig(
    *,
    kube: Any = None,
    config: Config | None = None,
    source: FakeSource | None = None,
    leader: FakeLeader | None = None,
) -> Rig:
    source, kube, notifier = source or FakeSource(), kube or FakeKube(), FakeNotifier()
    metrics = SelfMetrics(stale_after_seconds=60, clock=lambda: T0)
    engine = Engine(
        config=config or make_config(),
        source=source,  # type: ignore[arg-type]
        kube=kube,
        notifier=notifier,
        metrics=metrics,
        clock=lambda: T0,
        leader=leader,
    )
    engine.train_from_history(now=T0)
    return Rig(engine=engine, source=source, kube=kube, notifier=notifier, metrics=metrics)


def decisions(caplog: pytest.LogCaptureFixture, key: str = KEY) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "workload", None) == key]


def metric(r: Rig, name: str, labels: dict[str, str] | None = None) -> float | None:
    return r.metrics.registry.get_sample_value(name, labels or {})


class MultiKube:
    """Several Deployments (one FakeKube each, by name); calls recorded as (name, call)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.kubes = {name: FakeKube() for name in names}
        self.calls: list[tuple[str, str]] = []

    def _kube(self, call: str, name: str) -> FakeKube:
        self.calls.append((name, call))
        return self.kubes[name]

    def hpas(self, *, namespace: str) -> dict[str, HpaInfo]:
        self.calls.append(("*", "hpas"))
        return {}

    def list_deployments(self, *, namespace: str, label_selector: str) -> dict[str, DeploymentInfo]:
        self.calls.append(("*", f"list_deployments {namespace} {label_selector}"))
        key, value = label_selector.split("=")
        return {
            name: DeploymentInfo(
                annotations=dict(kube.annotations),
                resource_version=str(kube.rv),
                replicas=kube.replicas,
                labels=dict(kube.labels),
            )
            for name, kube in self.kubes.items()
            if kube.labels.get(key) == value
        }

    def get_deployment(self, *, namespace: str, name: str) -> DeploymentInfo:
        return self._kube("get_deployment", name).get_deployment(namespace=namespace, name=name)

    def get_scale(self, *, namespace: str, name: str) -> ScaleInfo:
        return self._kube("get_scale", name).get_scale(namespace=namespace, name=name)

    def patch_annotations(self, *, namespace: str, name: str, **kwargs: Any) -> DeploymentInfo:
        kube = self._kube("patch_annotations", name)
        return kube.patch_annotations(namespace=namespace, name=name, **kwargs)

    def patch_scale(self, *, namespace: str, name: str, replicas: int) -> ScaleInfo:
        kube = self._kube("patch_scale", name)
        return kube.patch_scale(namespace=namespace, name=name, replicas=replicas)


# The Kubernetes API emulator with RBAC on, as the engine's service account sees it
# (test_kube, test_leader).
MANIFESTS = Path(__file__).resolve().parents[2] / "kubernetes"
RBAC = MANIFESTS / "rbac.yaml"
TOKEN = "engine-sa-token"
ENGINE_USER = "system:serviceaccount:aegisops:aegisops-engine"
NS = "aegisops"


@contextmanager
def api_server(rbac_files: list[Path]) -> Iterator[KubeAPIServer]:
    """The emulator over TLS with `rbac_files`, the engine's token and the namespace NS."""
    with KubeAPIServer(tls=True, rbac_files=rbac_files, tokens={TOKEN: ENGINE_USER}) as server:
        server.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        yield server


def settings(
    *, mode: str = "auto", sa_dir: Path, kubeconfig: Path | None = None, timeout: float = 5.0
) -> KubernetesConfig:
    return KubernetesConfig(
        mode=mode,
        kubeconfig=str(kubeconfig) if kubeconfig else None,
        serviceaccount_dir=str(sa_dir),
        timeout_seconds=timeout,
    )


@contextmanager
def in_pod(server: KubeAPIServer, sa_dir: Path, *, mode: str = "auto") -> Iterator[KubeClient]:
    """The engine's client as in a pod: service-account files + KUBERNETES_SERVICE_*."""
    env = server.incluster_files(sa_dir, token=TOKEN)
    with KubeClient(config=settings(mode=mode, sa_dir=sa_dir), environ=env) as kube:
        yield kube
