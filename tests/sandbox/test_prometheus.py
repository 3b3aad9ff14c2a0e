"""The Prometheus launcher against Debian's real binary: start, scrape, reload targets, backfill."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests

from sandbox.procs import pid_alive, wait_until
from sandbox.prometheus import PrometheusError, PrometheusServer, ensure_installed


def _count(prom: PrometheusServer, promql: str) -> float:
    value = prom.scalar(promql)
    return 0.0 if value is None else value


def test_start_ready_query_and_stop_by_pid() -> None:
    with PrometheusServer(scrape_interval="1s") as prom:
        pid = prom.pid
        assert pid_alive(pid)
        assert prom.url.startswith("http://127.0.0.1:")
        assert requests.get(f"{prom.url}/-/ready", timeout=2).status_code == 200
        assert prom.query("vector(42)") == [
            {"metric": {}, "value": [pytest.approx(time.time(), abs=5), "42"]}
        ]
        with pytest.raises(PrometheusError, match=r"query 'sum\(': .*parse error"):
            prom.query("sum(")
    assert not pid_alive(pid)
    assert not prom.dir.exists()


def test_set_targets_changes_scrape_set_without_restart() -> None:
    with PrometheusServer(scrape_interval="1s") as prom:
        pid = prom.pid
        address = f"127.0.0.1:{prom.port}"  # Prometheus scrapes its own /metrics
        labels = {"namespace": "aegisops", "deployment": "aegisops-app"}
        prom.set_targets("aegisops-app", [(address, {**labels, "pod": "a"})])
        selector = 'up{job="aegisops-app", deployment="aegisops-app"}'
        up = f"count({selector} == 1)"
        wait_until(lambda: _count(prom, up) == 1, timeout=15, message="one target up")
        result = prom.query('up{job="aegisops-app"}')
        assert result[0]["metric"] == {
            "__name__": "up",
            "instance": address,
            "job": "aegisops-app",
            "namespace": "aegisops",
            "deployment": "aegisops-app",
            "pod": "a",
        }
        prom.set_targets("aegisops-app", [(address, {**labels, "pod": p}) for p in "abc"])
        wait_until(lambda: _count(prom, up) == 3, timeout=15, message="three targets up")
        prom.set_targets("aegisops-app", [(address, {**labels, "pod": "c"})])
        wait_until(
            lambda: [r["metric"]["pod"] for r in prom.query(selector)] == ["c"],
            timeout=15,
            message="only pod c left",
        )
        assert prom.pid == pid  # same process throughout: no restart


def test_backfill_is_visible_in_query_range() -> None:
    end = (int(time.time()) // 60) * 60 - 3600
    start = end - 600
    lines = ["# HELP demo_backfill_total Backfilled counter.", "# TYPE demo_backfill_total counter"]
    lines += [
        f'demo_backfill_total{{namespace="aegisops",deployment="aegisops-app"}} {i * 10} {t}'
        for i, t in enumerate(range(start, end + 1, 60))
    ]
    prom = PrometheusServer()
    try:
        output = prom.backfill("\n".join(lines) + "\n")
        assert "BLOCK ULID" in output
        prom.start()
        series = prom.query_range(
            'demo_backfill_total{deployment="aegisops-app"}', start=start, end=end, step=120
        )
        assert len(series) == 1
        assert series[0]["values"] == [
            [float(t), str((t - start) // 6)] for t in range(start, end + 1, 120)
        ]
        with pytest.raises(PrometheusError, match=r"backfill before start\(\)"):
            prom.backfill("x 1 1\n")
    finally:
        prom.close()


def test_backfill_error_names_promtool_output() -> None:
    prom = PrometheusServer()
    try:
        with pytest.raises(PrometheusError, match="promtool could not backfill"):
            prom.backfill("this is not openmetrics\n")
    finally:
        prom.close()


def test_start_failure_shows_last_log_lines() -> None:
    prom = PrometheusServer(extra_args=["--no-such-flag"])
    with pytest.raises(PrometheusError) as info:
        prom.__enter__()
    message = str(info.value)
    assert message.startswith("Prometheus did not start: prometheus exited with code 1")
    assert "unknown long flag '--no-such-flag'" in message
    assert prom.proc is None
    assert not prom.dir.exists()


def test_missing_binaries_without_apt_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrometheusError) as info:
        ensure_installed()
    assert str(info.value) == (
        "prometheus and promtool not on PATH and apt-get is not available: install Debian's "
        "package as root (`apt-get install -y --no-install-recommends prometheus`, or "
        "`make prometheus`), or put both binaries on PATH"
    )
    assert os.environ["PATH"] == str(tmp_path)


def test_rule_files_are_evaluated_and_reload_rereads_them(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "groups:\n"
        "  - name: demo\n"
        "    rules:\n"
        "      - record: demo:answer\n"
        "        expr: vector(41)\n"
    )
    with PrometheusServer(rule_files=[rules]) as prom:
        wait_until(lambda: prom.scalar("demo:answer") == 41, timeout=15, message="rule evaluated")
        rules.write_text(rules.read_text().replace("vector(41)", "vector(42)"))
        prom.reload()
        wait_until(lambda: prom.scalar("demo:answer") == 42, timeout=15, message="rule reloaded")
        one_a = 'label_replace(vector(1), "x", "a", "", "")'
        two = f'{one_a} or label_replace(vector(2), "x", "b", "", "")'
        with pytest.raises(PrometheusError, match="returned 2 series, expected one"):
            prom.scalar(two)
