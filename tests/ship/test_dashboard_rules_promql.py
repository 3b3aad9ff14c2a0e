"""The PromQL we ship, run against a real Prometheus scraping the real sample app.

The Prometheus here is configured the way the ServiceMonitors configure kube-prometheus-
stack's: each target carries the `__meta_kubernetes_*` labels Kubernetes service discovery
would give a pod of the Deployment, and the ServiceMonitor's own relabelings (translated
to relabel_configs) turn them into `namespace`, `deployment` and `pod`. So the dashboard
panels, the recording rules and the engine's default queries (from the shipped ConfigMap)
are shown to return data for aegisops/aegisops-app through the shipped label wiring, with
traffic from the load generator run with the loadgen Job's own arguments.

The engine panels are checked against a briefly-run `aegisops run` (shipped config,
shortened), scraped with the engine ServiceMonitor's settings (honorLabels). A quiet
run takes no action, so the actions panel is only shown to evaluate here; the surge
end-to-end tests are where actions happen.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from ship_helpers import APP, BIN, ENGINE, MANIFESTS, NAMESPACE, engine_config_text, find

from sandbox.kubeapi import KubeAPIServer
from sandbox.procs import atomic_write, free_port, spawn, stop_process, tail, wait_until

LISTENING = re.compile(r'msg="Listening on" address=127\.0\.0\.1:(\d+)')
POD = f"{APP}-7d4b9c-x2x9z"
RATE_WINDOW = "5s"  # stands in for Grafana's $__rate_interval at a 1 s scrape


# -- what we ship, extracted -------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    (body,) = find("ConfigMap", "aegisops-dashboard")["data"].values()
    return dict(json.loads(body))


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with the template variables substituted for one workload)."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$namespace", NAMESPACE)
                .replace("$deployment", APP)
                .replace("$__rate_interval", RATE_WINDOW)
            )
            assert "$" not in expr, f"unsubstituted variable in {expr}"
            found.append((panel["title"], expr))
    return found


def rule_groups() -> list[dict[str, Any]]:
    return list(find("PrometheusRule", "aegisops")["spec"]["groups"])


def relabel_configs(monitor: str) -> list[dict[str, Any]]:
    """A ServiceMonitor endpoint's relabelings as Prometheus relabel_configs."""
    (endpoint,) = find("ServiceMonitor", monitor)["spec"]["endpoints"]
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [
        {keys.get(k, k): (v.lower() if k == "action" else v) for k, v in relabeling.items()}
        for relabeling in endpoint.get("relabelings", [])
    ]


def app_series_labels() -> dict[str, str]:
    """What Kubernetes SD says about one pod of the shipped app Deployment."""
    pod = find("Deployment", APP)["spec"]["template"]["metadata"]
    labels = {
        "__meta_kubernetes_namespace": NAMESPACE,
        "__meta_kubernetes_pod_name": POD,
    }
    for key, value in pod["labels"].items():
        labels["__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)] = value
    return labels


# -- processes ---------------------------------------------------------------------------


@dataclass
class Scraper:
    url: str
    rules_file: Path
    engine_targets: Path

    def scrape_engine(self, address: str) -> None:
        """Add the engine as the engine ServiceMonitor would (job = Service name)."""
        labels = {"namespace": NAMESPACE, "pod": f"{ENGINE}-5f6d7c-abcde"}
        atomic_write(self.engine_targets, json.dumps([{"targets": [address], "labels": labels}]))

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        body = response.json()
        assert body["status"] == "success", f"{promql}: {body.get('error')}"
        return list(body["data"]["result"])


@pytest.fixture
def sample_app(tmp_path: Path) -> Iterator[str]:
    """The sample app with the shipped Deployment's APP_* settings, on 127.0.0.1."""
    (container,) = find("Deployment", APP)["spec"]["template"]["spec"]["containers"]
    env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
    env.update(APP_HOST="127.0.0.1", APP_PORT="0")
    port_file = tmp_path / "app.port"
    proc = spawn(
        argv=[str(BIN / "aegisops-sample-app"), "--port-file", str(port_file)],
        log_path=tmp_path / "app.log",
        env=env,
    )
    try:
        port = wait_until(
            lambda: port_file.exists() and port_file.read_text().strip(),
            timeout=15,
            message=f"sample app port file\n{tail(tmp_path / 'app.log')}",
        )
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


@pytest.fixture
def loadgen(sample_app: str, tmp_path: Path) -> Iterator[None]:
    """The loadgen Job's arguments, pointed at the local app and squeezed in time."""
    (container,) = find("Job", "aegisops-loadgen")["spec"]["template"]["spec"]["containers"]
    local = {
        "--target": f"http://{sample_app}/",
        "--at": "2",
        "--for": "4",
        "--duration": "60",
        "--report-every": "5",
    }
    args = [
        f"{flag}={local[flag]}" if flag in local else arg
        for arg in container["args"]
        for flag in [arg.split("=", 1)[0]]
    ]
    assert sum(a.startswith(tuple(local)) for a in args) == len(local)
    log = tmp_path / "loadgen.log"
    proc = spawn(argv=[str(BIN / container["command"][0]), *args], log_path=log)
    try:
        wait_until(lambda: "loadgen start" in log.read_text(), timeout=15, message="loadgen start")
        assert proc.poll() is None, tail(log)  # the Job's flags are accepted
        yield
    finally:
        stop_process(proc)


@pytest.fixture
def scraper(sample_app: str, tmp_path: Path) -> Iterator[Scraper]:
    """Prometheus scraping the app as the ServiceMonitor would, with the shipped rules."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    targets = tmp_path / "app.json"
    targets.write_text(json.dumps([{"targets": [sample_app], "labels": app_series_labels()}]))
    engine_targets = tmp_path / "engine.json"
    engine_targets.write_text("[]")
    (engine_endpoint,) = find("ServiceMonitor", ENGINE)["spec"]["endpoints"]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": APP,
                "scrape_timeout": "1s",
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
                "relabel_configs": relabel_configs(APP),
            },
            {
                "job_name": ENGINE,
                "scrape_timeout": "1s",
                "metrics_path": engine_endpoint["path"],
                "honor_labels": engine_endpoint["honorLabels"],
                "file_sd_configs": [{"files": [str(engine_targets)], "refresh_interval": "1s"}],
            },
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    log = tmp_path / "prometheus.log"
    proc = spawn(
        argv=[
            "prometheus",
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            "--web.listen-address=127.0.0.1:0",
        ],
        log_path=log,
    )
    try:

        def port() -> str | None:
            assert proc.poll() is None, tail(log)
            match = LISTENING.search(log.read_text())
            return match[1] if match else None

        url = f"http://127.0.0.1:{wait_until(port, timeout=20, message='Prometheus port')}"
        wait_until(lambda: _ok(f"{url}/-/ready"), timeout=20, message="Prometheus ready")
        yield Scraper(url=url, rules_file=rules, engine_targets=engine_targets)
    finally:
        stop_process(proc)


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _has_number(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


# -- tests -------------------------------------------------------------------------------


def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    done = subprocess.run(
        ["promtool", "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in rule_groups())
    assert f"SUCCESS: {count} rules found" in done.stdout


def test_alerts_fire_when_they_should_per_promtool_test_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    suite = yaml.safe_load((Path(__file__).with_name("prometheus-rules.test.yaml")).read_text())
    suite["rule_files"] = [str(rules)]
    suite_path = tmp_path / "rules.test.yaml"
    suite_path.write_text(yaml.safe_dump(suite, sort_keys=False))
    done = subprocess.run(
        ["promtool", "test", "rules", str(suite_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {r["alert"] for g in rule_groups() for r in g["rules"] if "alert" in r}
    tested = {a["alertname"] for t in suite["tests"] for a in t.get("alert_rule_test", [])}
    assert tested == alerts, f"alerts without a promtool test: {alerts - tested}"


@pytest.mark.usefixtures("loadgen")
def test_app_panels_rules_and_engine_queries_return_data_for_the_sample_app(
    scraper: Scraper,
) -> None:
    # The ServiceMonitor's relabelings gave the series the workload identity.
    up = wait_until(
        lambda: scraper.query(f'up{{namespace="{NAMESPACE}", deployment="{APP}"}} == 1'),
        timeout=20,
        message="the app scraped with namespace/deployment labels",
    )
    assert up[0]["metric"]["pod"] == POD

    engine_queries = yaml.safe_load(engine_config_text())["prometheus"]["queries"]
    recorded = [r["record"] for g in rule_groups() for r in g["rules"] if "record" in r]
    app_panels = [
        (title, expr)
        for title, expr in panel_queries()
        if "aegisops_" not in expr  # the engine's own metrics: see the test below
    ]
    assert {t for t, _ in app_panels} >= {"Requests per second", "p95 latency"}
    wanted = [
        *app_panels,
        *((f"engine query {k}", q) for k, q in engine_queries.items()),
        *(
            (f"recording rule {r}", f'{r}{{namespace="{NAMESPACE}", deployment="{APP}"}}')
            for r in recorded
        ),
    ]
    for what, expr in wanted:
        result = wait_until(
            lambda expr=expr: _has_number(found := scraper.query(expr)) and found,
            timeout=30,
            message=f"data for {what}: {expr}",
        )
        workloads = {(s["metric"].get("namespace"), s["metric"].get("deployment")) for s in result}
        assert workloads == {(NAMESPACE, APP)}, f"{what}: {workloads}"

    # The alert expressions run on live data too; with no engine scraped here, exactly
    # the "engine down" alert has something to say.
    alerting = {
        rule["alert"]: scraper.query(rule["expr"])
        for group in rule_groups()
        for rule in group["rules"]
        if "alert" in rule
    }
    assert {name for name, result in alerting.items() if result} == {"AegisOpsEngineDown"}


@pytest.fixture
def engine(scraper: Scraper, tmp_path: Path) -> Iterator[str]:
    """`aegisops run` with the shipped config, shortened for a test: 1 s passes, 5 s rate
    windows, 8 baseline samples; in-cluster auth as its service account (RBAC from
    kubernetes/rbac.yaml) against the emulator holding the shipped app Deployment."""
    user = f"system:serviceaccount:{NAMESPACE}:{ENGINE}"
    rbac = [MANIFESTS / "rbac.yaml"]
    with KubeAPIServer(tls=True, tokens={"sa-token": user}, rbac_files=rbac) as api:
        api.create(find("Namespace", NAMESPACE))
        api.create(find("Deployment", APP))
        sa_dir = tmp_path / "serviceaccount"
        env = {"PATH": os.environ["PATH"], **api.incluster_files(sa_dir, token="sa-token")}
        config = yaml.safe_load(engine_config_text())
        port = free_port()
        config["poll_interval_seconds"] = 1
        config["server"]["port"] = port
        config["prometheus"]["url"] = scraper.url
        config["prometheus"]["queries"] = {
            name: query.replace("[1m]", "[5s]")
            for name, query in config["prometheus"]["queries"].items()
        }
        config["detector"].update(baseline_samples=8, cold_start_seconds=0)
        config["kubernetes"]["serviceaccount_dir"] = str(sa_dir)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / "engine.log"
        proc = spawn(
            argv=[str(BIN / "aegisops"), "run", "--config", str(path)], log_path=log, env=env
        )
        try:
            scraper.scrape_engine(f"127.0.0.1:{port}")
            yield str(log)
        finally:
            stop_process(proc)
        assert api.requests(user=user, code=403) == [], "the engine was denied"


@pytest.mark.usefixtures("loadgen")
def test_engine_panels_return_data_from_a_briefly_run_engine(scraper: Scraper, engine: str) -> None:
    engine_panels = [(t, e) for t, e in panel_queries() if "aegisops_" in e]
    assert {t for t, _ in engine_panels} >= {"Anomaly score", "Replicas", "AegisOps actions"}
    for what, expr in engine_panels:
        if "aegisops_actions_total" in expr:
            # A series per action taken, so usually none in this short run; it must still
            # evaluate, and any action it shows is for the shipped target.
            taken = scraper.query(expr)
            assert {(s["metric"]["namespace"], s["metric"]["deployment"]) for s in taken} <= {
                (NAMESPACE, APP)
            }
            continue
        result = wait_until(
            lambda expr=expr: _has_number(found := scraper.query(expr)) and found,
            timeout=45,
            message=f"data for {what}: {expr}\n{tail(Path(engine))}",
        )
        if "namespace" in expr:
            workloads = {(s["metric"]["namespace"], s["metric"]["deployment"]) for s in result}
            assert workloads == {(NAMESPACE, APP)}, f"{what}: {workloads}"
    # The engine is up and passing now: its health alerts are quiet.
    for group in rule_groups():
        for rule in group["rules"]:
            if rule.get("alert") in ("AegisOpsEngineDown", "AegisOpsEngineStalled"):
                assert scraper.query(rule["expr"]) == [], rule["alert"]
