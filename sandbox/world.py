"""The whole sandbox in one context manager, for end-to-end tests and `make demo`.

    with World(replicas=1) as world:
        world.set_load(Steady(rps=60))
        world.scale(3)                       # through the kubernetes client, like anyone
        world.wait_for(lambda: world.replicas() == 3, timeout=30, message="3 replicas")
        world.prometheus.query(...); world.slack.messages(); world.api.requests(...)

It starts, in order: the Slack receiver, Prometheus (1 s scrape), the Kubernetes API
emulator (TLS; RBAC from `rbac_files` if given), namespace `aegisops` with the
`aegisops-app` Deployment (`replicas`, sample-app `--workers`/`--service-time` as
container args), the kubelet (sandbox.cluster) that runs those replicas and feeds
Prometheus and the load-generator targets file, and on first `set_load` an in-process
load generator. Everything is stopped on exit, in reverse order, also on an exception
or Ctrl-C.

Identities: `admin_kubeconfig` (the sandbox's own admin) and, for the engine, the
service account `system:serviceaccount:aegisops:aegisops-engine`: `engine_kubeconfig`,
or in-cluster style `incluster_env` (KUBERNETES_SERVICE_HOST/PORT) with
`serviceaccount_dir` (token, ca.crt, namespace).

Issue-5 additions: `capacity` / `set_capacity(n)` (the kubelet runs at most n replicas;
the rest stay Pending), an HPA controller (sandbox.hpa, user
`system:serviceaccount:kube-system:horizontal-pod-autoscaler`) with `add_hpa` /
`delete_hpa`, and `prom_proxy` (sandbox.promproxy, mode `ok` at start) in front of
Prometheus: `engine_prometheus_url` is the proxy's URL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from sampleapp.loadgen import LoadGenerator, LoadSettings
from sampleapp.loadstats import LoadStats
from sampleapp.profiles import Profile
from sandbox.cluster import Kubelet
from sandbox.hpa import HPA_USER, HpaController, rbac_objects
from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import Managed, wait_until
from sandbox.prometheus import PrometheusServer
from sandbox.promproxy import PromProxy
from sandbox.slack import SlackReceiver

log = logging.getLogger("sandbox.world")
T = TypeVar("T")

NAMESPACE = "aegisops"
DEPLOYMENT = "aegisops-app"
ENGINE_SERVICE_ACCOUNT = "aegisops-engine"
ENGINE_USER = f"system:serviceaccount:{NAMESPACE}:{ENGINE_SERVICE_ACCOUNT}"
APP_LABELS = {"app.kubernetes.io/name": DEPLOYMENT, "app.kubernetes.io/part-of": "aegisops"}


@dataclass(frozen=True)
class AppSpec:
    """The seeded Deployment: initial replicas and each replica's capacity."""

    replicas: int = 1
    workers: int = 2
    service_time_seconds: float = 0.05


def app_deployment(*, spec: AppSpec) -> dict[str, Any]:
    """The aegisops-app Deployment the world seeds (the kubelet runs its replicas)."""
    args = ["--workers", str(spec.workers), "--service-time", str(spec.service_time_seconds)]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": dict(APP_LABELS)},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": DEPLOYMENT}},
            "template": {
                "metadata": {"labels": dict(APP_LABELS)},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "aegisops-app:sandbox",
                            "args": args,
                            "ports": [{"name": "http", "containerPort": 8080}],
                        }
                    ]
                },
            },
        },
    }


def hpa_manifest(
    *,
    min_replicas: int | None,
    max_replicas: int,
    name: str = DEPLOYMENT,
    target: str = DEPLOYMENT,
    kind: str = "Deployment",
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    """An autoscaling/v2 HPA on `kind` `target` (min_replicas None: the field left out)."""
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
        "maxReplicas": max_replicas,
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def _plain(response: Any) -> dict[str, Any]:
    """A response read with `_preload_content=False`: plain JSON, no model round trip."""
    result: dict[str, Any] = json.loads(response.data)
    return result


class World(Managed):
    """Emulator + Prometheus + process-backed aegisops-app + Slack receiver (+ load)."""

    def __init__(
        self,
        *,
        app: AppSpec | None = None,
        rbac_files: Sequence[Path] = (),
        scrape_interval: str = "1s",
        seed: int = 0,
        load_report: Callable[[str], None] | None = None,
        capacity: int | None = None,
    ) -> None:
        self.app = app or AppSpec()
        self.rbac_files = [Path(p) for p in rbac_files]
        self.scrape_interval = scrape_interval
        self.seed = seed
        self.load_report = load_report
        self.capacity = capacity
        self.engine_token = secrets.token_hex(16)
        self.hpa_token = secrets.token_hex(16)
        self._stack = contextlib.ExitStack()
        self.incluster_env: dict[str, str] = {}
        self.loadgen: LoadGenerator | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> World:
        stack = self._stack
        tmp = tempfile.TemporaryDirectory(prefix="aegisops-world-")
        stack.callback(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.admin_kubeconfig = self.dir / "admin.kubeconfig"
        self.engine_kubeconfig = self.dir / "engine.kubeconfig"
        self.serviceaccount_dir = self.dir / "serviceaccount"
        self.targets_file = self.dir / "app-targets.txt"
        self.slack = stack.enter_context(SlackReceiver())
        self.prometheus = stack.enter_context(
            PrometheusServer(scrape_interval=self.scrape_interval)
        )
        self.prom_proxy = stack.enter_context(PromProxy(self.prometheus.url))
        self.api = stack.enter_context(
            KubeAPIServer(
                tls=True,
                rbac_files=self.rbac_files if self.rbac_files else None,
                tokens={self.engine_token: ENGINE_USER, self.hpa_token: HPA_USER},
                seed=self.seed,
            )
        )
        self.api.write_kubeconfig(self.admin_kubeconfig)
        self.api.write_kubeconfig(self.engine_kubeconfig, token=self.engine_token)
        self.incluster_env = self.api.incluster_files(
            self.serviceaccount_dir, token=self.engine_token
        )
        self.api_client = stack.enter_context(
            k8s_config.new_client_from_config(config_file=str(self.admin_kubeconfig))
        )
        self.apps = k8s.AppsV1Api(self.api_client)
        self._seed_objects()
        self.kubelet = stack.enter_context(
            Kubelet(
                api_client=self.api_client,
                namespace=NAMESPACE,
                on_targets=lambda _ns, name, targets: self.prometheus.set_targets(name, targets),
                targets_file=self.targets_file,
                seed=self.seed,
                capacity=self.capacity,
            )
        )
        hpa_kubeconfig = self.api.write_kubeconfig(
            self.dir / "hpa.kubeconfig", token=self.hpa_token
        )
        self.hpa_client = stack.enter_context(
            k8s_config.new_client_from_config(config_file=str(hpa_kubeconfig))
        )
        self.hpa_controller = stack.enter_context(HpaController(api_client=self.hpa_client))
        stack.callback(self._stop_load)
        return self

    def stop(self) -> None:
        self._stack.close()

    def _seed_objects(self) -> None:
        """Seeded straight into the store: the request log starts with the kubelet's calls."""
        self.api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        self.api.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": ENGINE_SERVICE_ACCOUNT, "namespace": NAMESPACE},
            }
        )
        self.api.create(app_deployment(spec=self.app))
        for obj in rbac_objects():  # only consulted when RBAC is on
            self.api.create(obj)

    # -- load --------------------------------------------------------------------------

    def set_load(self, profile: Profile) -> None:
        """Play `profile` against the live replicas (starts the load generator the first time)."""
        if self.loadgen is None:
            settings = LoadSettings(
                profile=profile,
                seed=self.seed,
                max_in_flight=256,
                report_interval_seconds=5.0 if self.load_report else 0.0,
            )
            self.loadgen = LoadGenerator(
                settings=settings, targets_file=self.targets_file, report=self.load_report
            )
            self.loadgen.start()
        else:
            self.loadgen.set_profile(profile)

    def load_stats(self) -> LoadStats | None:
        return None if self.loadgen is None else self.loadgen.stats()

    def _stop_load(self) -> None:
        if self.loadgen is not None:
            self.loadgen.stop()

    # -- reading and acting ------------------------------------------------------------

    @property
    def prometheus_url(self) -> str:
        return self.prometheus.url

    @property
    def engine_prometheus_url(self) -> str:
        """Where the engine should read Prometheus: through the fault proxy."""
        return self.prom_proxy.url

    @property
    def slack_url(self) -> str:
        return self.slack.url

    def slack_messages(self) -> list[Any]:
        return self.slack.messages()

    def replicas(self) -> int:
        """Live aegisops-app replicas (processes answering /healthz, as the kubelet sees them)."""
        return len(self.kubelet.replicas(namespace=NAMESPACE, name=DEPLOYMENT))

    def deployment(self) -> dict[str, Any]:
        """The aegisops-app Deployment as the API serves it (plain JSON)."""
        return _plain(
            self.apps.read_namespaced_deployment(
                DEPLOYMENT, NAMESPACE, _preload_content=False, _request_timeout=10
            )
        )

    def scale(self, replicas: int) -> None:
        """Set aegisops-app's replicas through the scale subresource, as the admin."""
        self.apps.patch_namespaced_deployment_scale(
            DEPLOYMENT,
            NAMESPACE,
            {"spec": {"replicas": replicas}},
            _content_type="application/merge-patch+json",
            _request_timeout=10,
        )

    def set_capacity(self, capacity: int | None) -> None:
        """At most `capacity` app processes (None: unlimited); replicas over it stay Pending."""
        self.kubelet.set_capacity(capacity)

    def add_hpa(
        self, *, min_replicas: int | None, max_replicas: int, name: str = DEPLOYMENT
    ) -> dict[str, Any]:
        """Create an autoscaling/v2 HPA on aegisops-app (as the admin); returns it as stored."""
        hpa = hpa_manifest(name=name, min_replicas=min_replicas, max_replicas=max_replicas)
        return _plain(
            self._autoscaling().create_namespaced_horizontal_pod_autoscaler(
                NAMESPACE, hpa, _preload_content=False, _request_timeout=10
            )
        )

    def delete_hpa(self, name: str = DEPLOYMENT) -> None:
        self._autoscaling().delete_namespaced_horizontal_pod_autoscaler(
            name, NAMESPACE, _request_timeout=10
        )

    def hpa(self, name: str = DEPLOYMENT) -> dict[str, Any]:
        """The HPA as the API serves it (plain JSON)."""
        return _plain(
            self._autoscaling().read_namespaced_horizontal_pod_autoscaler(
                name, NAMESPACE, _preload_content=False, _request_timeout=10
            )
        )

    def _autoscaling(self) -> Any:
        return k8s.AutoscalingV2Api(self.api_client)

    def wait_for(
        self, predicate: Callable[[], T], *, timeout: float, message: str = "condition"
    ) -> T:
        """Poll `predicate` until truthy (returns its value); WaitTimeout at the deadline."""
        return wait_until(predicate, timeout=timeout, interval=0.2, message=message)
