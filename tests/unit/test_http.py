from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client import CollectorRegistry

from driftline.monitoring.http import MetricsServer
from driftline.monitoring.metrics import ServiceMetrics
from tests.helpers import post_promote


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_endpoints_serve_the_passed_registry_and_probes() -> None:
    reg = CollectorRegistry()
    m = ServiceMetrics(reg, model="GaussianNB", task="classification")
    m.events.labels("predicted").inc(3)
    m.dead_letters.labels("not_json").inc()
    state = {"ready": False}
    srv = MetricsServer(reg, "127.0.0.1", 0, healthy=lambda: (True, "ok"),
                        ready=lambda: (state["ready"], "ok" if state["ready"] else "no partitions assigned yet"))
    srv.start()
    try:
        code, body = _get(srv.port, "/metrics")
        assert code == 200
        assert 'driftline_events_total{outcome="predicted"} 3.0' in body
        assert 'driftline_dead_letters_total{reason="not_json"} 1.0' in body
        assert 'driftline_build_info{model="GaussianNB"' in body
        assert _get(srv.port, "/healthz") == (200, "ok\n")
        assert _get(srv.port, "/readyz") == (503, "no partitions assigned yet\n")
        state["ready"] = True
        assert _get(srv.port, "/readyz")[0] == 200
        assert _get(srv.port, "/nope")[0] == 404
    finally:
        srv.stop()


def test_two_metric_sets_do_not_collide() -> None:
    # metrics live on the registry passed in, never on the global one
    ServiceMetrics(CollectorRegistry(), model="a", task="classification")
    ServiceMetrics(CollectorRegistry(), model="b", task="regression")


def test_the_live_page_and_its_data_are_served_with_a_sampler() -> None:
    import json
    import time

    from driftline.monitoring.live import LiveSampler, LiveStatus

    state = {"consumed": 0, "learned": 0}

    def status() -> LiveStatus:
        return LiveStatus(learned=state["learned"], rolling=0.5 + state["learned"] / 1000, metric="accuracy",
                          consumed=state["consumed"], lag=12.0, model="GaussianNB",
                          detections=[(150, "ADWIN", "drift")], adaptations=[(150, "reset")])

    live = LiveSampler(status)
    for step in range(3):
        state["consumed"], state["learned"] = 100 * step, 100 * step
        live.sample()
        time.sleep(0.05)
    srv = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, healthy=lambda: (True, "ok"),
                        ready=lambda: (True, "ok"), live=live)
    srv.start()
    try:
        code, page = _get(srv.port, "/")
        assert code == 200 and "<svg" in page and "live.json" in page and "http://" not in page.replace(
            'xmlns="http://www.w3.org/2000/svg"', "").replace('"http://www.w3.org/2000/svg"', "")
        code, body = _get(srv.port, "/live.json")
        data = json.loads(body)
        assert code == 200 and data["series"] == [[0, 0.5], [100, 0.6], [200, 0.7]]
        assert data["detections"] == [[150, "ADWIN", "drift"]] and data["adaptations"] == [[150, "reset"]]
        assert data["lag"] == 12.0 and data["events_per_s"] > 100  # 100 events in about 50 ms
    finally:
        srv.stop()
    bare = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, healthy=lambda: (True, "ok"), ready=lambda: (True, "ok"))
    bare.start()
    try:
        assert _get(bare.port, "/")[0] == 404  # no sampler: no page
    finally:
        bare.stop()


def test_promote_exists_only_with_authentication_and_checks_it_and_the_body() -> None:
    from driftline.monitoring.config import HttpAuthSettings
    from driftline.monitoring.http_security import authenticator

    asked: list[str] = []

    def promote(model: str) -> tuple[int, str]:
        asked.append(model)
        return (202, "accepted") if model == "b" else (404, f"no model named {model!r}")

    def post(port: int, body: bytes, token: str | None = "s3cret") -> tuple[int, str]:
        return post_promote(port, body, token)

    ok = lambda: (True, "ok")  # noqa: E731
    open_server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, ok, ok, promote=promote).start()
    try:
        assert post(open_server.port, b'{"model": "b"}')[0] == 404  # no auth configured: no control endpoint
    finally:
        open_server.stop()
    auth = authenticator(HttpAuthSettings(kind="bearer", token="s3cret"))
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0, ok, ok, auth=auth, promote=promote).start()
    try:
        assert post(server.port, b'{"model": "b"}', token=None)[0] == 401
        assert post(server.port, b'{"model": "b"}', token="wrong")[0] == 401
        assert post(server.port, b'{"model": "b"}') == (202, "accepted\n")
        assert post(server.port, b'{"model": "zz"}') == (404, "no model named 'zz'\n")
        code, message = post(server.port, b"not json")
        assert code == 400 and "not JSON" in message
        code, message = post(server.port, b'{"name": "b"}')
        assert code == 400 and 'expected {"model": NAME}' in message
        assert post(server.port, b"x" * 5000)[0] == 400
        assert asked == ["b", "zz"]
    finally:
        server.stop()
