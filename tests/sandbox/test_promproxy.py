"""The Prometheus fault proxy, in each mode, in front of the real Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.procs import free_port, wait_until
from sandbox.prometheus import PrometheusServer
from sandbox.promproxy import DOWN_BODY, Mode, PromProxy

UP = "up"


@pytest.fixture(scope="module")
def scraped() -> Iterator[tuple[PrometheusServer, float]]:
    """Prometheus scraping itself as two "deployments", a and b; and a time both have data."""
    with PrometheusServer(scrape_interval="1s") as prom:
        address = prom.url.removeprefix("http://")
        for deployment in ("a", "b"):
            labels = {"namespace": "ns", "deployment": deployment, "pod": f"{deployment}-1"}
            prom.set_targets(f"job-{deployment}", [(address, labels)])

        def settled() -> float | None:  # a past time with 3 samples per series in [t-2, t]
            t = time.time() - 1
            result = prom.query_range(UP, start=t - 2, end=t, step=1)
            return t if len(result) == 2 and all(len(r["values"]) == 3 for r in result) else None

        at = wait_until(settled, timeout=30, interval=0.5, message="both scraped 3 times")
        yield prom, at


@pytest.fixture
def proxy(scraped: tuple[PrometheusServer, float]) -> Iterator[PromProxy]:
    with PromProxy(scraped[0].url) as started:
        yield started


def _get(base: str, endpoint: str, params: dict[str, Any]) -> requests.Response:
    return requests.get(f"{base}/api/v1/{endpoint}", params=params, timeout=10)


def test_ok_forwards_get_and_post_unchanged(
    scraped: tuple[PrometheusServer, float], proxy: PromProxy
) -> None:
    prom, at = scraped
    direct = _get(prom.url, "query", {"query": UP, "time": at})
    through = _get(proxy.url, "query", {"query": UP, "time": at})
    assert (through.status_code, through.json()) == (200, direct.json())
    assert through.headers["Content-Type"] == direct.headers["Content-Type"]
    posted = requests.post(f"{proxy.url}/api/v1/query", data={"query": UP, "time": at}, timeout=10)
    assert posted.json() == direct.json()
    assert requests.get(f"{proxy.url}/-/ready", timeout=5).status_code == 200
    bad = _get(proxy.url, "query", {"query": "up{"})  # upstream's 400 passes through
    assert bad.status_code == 400 and bad.json()["errorType"] == "bad_data"
    assert proxy.request_count == 4


def test_down_answers_503_with_a_prometheus_error_body(proxy: PromProxy) -> None:
    proxy.set_mode("down")
    for path in ("/api/v1/query?query=up", "/-/ready"):
        response = requests.get(f"{proxy.url}{path}", timeout=5)
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/json"
        assert response.json() == {
            "status": "error",
            "errorType": "unavailable",
            "error": "sandbox PromProxy: Prometheus is down (mode 'down')",
        }
    assert DOWN_BODY["errorType"] == "unavailable"
    proxy.set_mode("ok")
    assert _get(proxy.url, "query", {"query": "vector(1)"}).json()["status"] == "success"
    assert proxy.request_count == 3


def test_nan_replaces_every_sample_value(
    scraped: tuple[PrometheusServer, float], proxy: PromProxy
) -> None:
    prom, at = scraped
    proxy.set_mode("nan")
    direct = _get(prom.url, "query", {"query": UP, "time": at}).json()
    through = _get(proxy.url, "query", {"query": UP, "time": at}).json()
    expected = [
        {"metric": s["metric"], "value": [s["value"][0], "NaN"]} for s in direct["data"]["result"]
    ]
    assert through == {"status": "success", "data": {"resultType": "vector", "result": expected}}
    assert len(expected) == 2

    params = {"query": UP, "start": at - 2, "end": at, "step": 1}
    direct = _get(prom.url, "query_range", params).json()
    through = _get(proxy.url, "query_range", params).json()
    expected = [
        {"metric": s["metric"], "values": [[t, "NaN"] for t, _ in s["values"]]}
        for s in direct["data"]["result"]
    ]
    assert through == {"status": "success", "data": {"resultType": "matrix", "result": expected}}
    assert all(len(s["values"]) == 3 for s in expected)

    params = {"query": "scalar(vector(1))", "time": at}
    [when, one] = _get(prom.url, "query", params).json()["data"]["result"]
    scalar = _get(proxy.url, "query", params).json()
    assert (one, scalar["data"]) == ("1", {"resultType": "scalar", "result": [when, "NaN"]})


def test_partial_drops_the_series_of_one_deployment(
    scraped: tuple[PrometheusServer, float], proxy: PromProxy
) -> None:
    prom, at = scraped
    proxy.set_mode("partial", deployment="a")
    direct = _get(prom.url, "query", {"query": UP, "time": at}).json()
    through = _get(proxy.url, "query", {"query": UP, "time": at}).json()
    kept = [s for s in direct["data"]["result"] if s["metric"]["deployment"] == "b"]
    assert through == {"status": "success", "data": {"resultType": "vector", "result": kept}}
    assert [s["metric"]["deployment"] for s in through["data"]["result"]] == ["b"]

    params = {"query": UP, "start": at - 2, "end": at, "step": 1}
    ranged = _get(proxy.url, "query_range", params).json()["data"]["result"]
    assert [s["metric"]["deployment"] for s in ranged] == ["b"]


def test_partial_matches_the_label_it_is_given(
    scraped: tuple[PrometheusServer, float], proxy: PromProxy
) -> None:
    _, at = scraped
    proxy.set_mode("partial", deployment="a-1", label="pod")
    assert proxy.mode == Mode(name="partial", deployment="a-1", label="pod")
    through = _get(proxy.url, "query", {"query": UP, "time": at}).json()["data"]["result"]
    assert [s["metric"]["pod"] for s in through] == ["b-1"]
    proxy.set_mode("partial", deployment="a-1")  # the default label, deployment, is not "a-1"
    through = _get(proxy.url, "query", {"query": UP, "time": at}).json()["data"]["result"]
    assert sorted(s["metric"]["pod"] for s in through) == ["a-1", "b-1"]


def test_slow_delays_past_a_client_timeout_then_ok_answers(proxy: PromProxy) -> None:
    proxy.set_mode("slow", seconds=30)
    with pytest.raises(requests.Timeout):
        _get_with_timeout(proxy.url, timeout=0.5)
    proxy.set_mode("ok")
    assert _get(proxy.url, "query", {"query": "vector(1)"}).json()["status"] == "success"
    assert proxy.mode.name == "ok"
    # stop() does not wait out the 30 s: the slow request is released


def _get_with_timeout(base: str, *, timeout: float) -> requests.Response:
    return requests.get(f"{base}/api/v1/query", params={"query": "vector(1)"}, timeout=timeout)


def test_unreachable_upstream_is_a_502_error_body() -> None:
    with PromProxy(f"http://127.0.0.1:{free_port()}") as proxy:
        response = requests.get(f"{proxy.url}/api/v1/query?query=up", timeout=10)
    assert response.status_code == 502
    body = response.json()
    assert (body["status"], body["errorType"]) == ("error", "unavailable")
    assert body["error"].startswith("upstream: ")


def test_bad_modes_are_rejected(proxy: PromProxy) -> None:
    with pytest.raises(
        ValueError, match=r"^unknown mode 'flaky'; one of ok, down, slow, nan, partial$"
    ):
        proxy.set_mode("flaky")
    with pytest.raises(ValueError, match=r"^mode 'slow' takes seconds, got \[\]$"):
        proxy.set_mode("slow")
    with pytest.raises(ValueError, match=r"^mode 'ok' takes no parameters, got \['seconds'\]$"):
        proxy.set_mode("ok", seconds=1)
    with pytest.raises(
        ValueError,
        match=r"^mode 'partial' takes deployment \(optional: label\), got \['label'\]$",
    ):
        proxy.set_mode("partial", label="app")
    with pytest.raises(ValueError, match=r"^mode 'partial': label must not be empty$"):
        proxy.set_mode("partial", deployment="a", label="")
    assert proxy.mode.name == "ok"


def test_the_engines_client_library_sees_the_faults(
    scraped: tuple[PrometheusServer, float], proxy: PromProxy
) -> None:
    from prometheus_api_client import PrometheusConnect

    _, at = scraped
    client = PrometheusConnect(url=proxy.url, disable_ssl=True)
    proxy.set_mode("partial", deployment="b")
    result = client.custom_query(UP, params={"time": at})
    assert [s["metric"]["deployment"] for s in result] == ["a"]
    proxy.set_mode("nan")
    assert [s["value"][1] for s in client.custom_query(UP, params={"time": at})] == ["NaN", "NaN"]
    proxy.set_mode("down")  # the library retries 503s, then gives up
    before = proxy.request_count
    with pytest.raises(requests.exceptions.RetryError, match=r"too many 503 error responses"):
        client.custom_query(UP)
    assert proxy.request_count - before > 1
