"""The shipped dashboards and alerts against a real Prometheus scraping a real service.

The service consumes Agrawal function 0, then (after Prometheus has a baseline) function 4: a drift
it detects and adapts to. Every 10th label comes on the labels topic; a few invalid records are dead-lettered;
checkpoints are on. Prometheus (Debian's package) runs with the shipped prometheus.yml and alerts.yml,
only the target, the intervals (1 s) and the paths changed. Then every panel's queries (template
variables substituted) run through Prometheus' HTTP API over the test's time range: each panel must
return at least one series (GPU panels only where a GPU is used); every alert rule must evaluate
without error, the drift alert must fire and the accuracy-drop alert must be pending or firing.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.monitoring.dashboards import DASHBOARDS
from driftline.stream.broker import free_port
from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, produce_events, wait_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
MODEL = "HoeffdingTreeClassifier"


def _api(port: int, path: str, **params: Any) -> Any:
    url = f"http://127.0.0.1:{port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]


class Prometheus:
    def __init__(self, tmp: Path, target_port: int) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("Debian's prometheus package is required (scripts/system-deps.sh installs it)")
        cfg = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        cfg["rule_files"] = [str(DEPLOY / "alerts.yml")]
        cfg["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{target_port}"]}]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.port = free_port()
        self._log = open(tmp / "prometheus.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [exe, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"], stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()

    def up(self) -> bool:
        try:
            targets = _api(self.port, "targets")["activeTargets"]
        except OSError:
            return False
        return bool(targets) and targets[0]["health"] == "up"

    def series(self, expr: str, start: float) -> list[Any]:
        return list(_api(self.port, "query_range", query=expr, start=start, end=time.time(), step="1s")["result"])

    def scrapes(self) -> int:
        res = _api(self.port, "query", query='count_over_time(up{job="driftline"}[10m])')["result"]
        return int(float(res[0]["value"][1])) if res else 0


def _events(function: int, n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    return list(itertools.islice(from_generator("Agrawal", params={"classification_function": function},
                                                seed=seed, id_prefix=prefix), n))


def test_every_panel_has_data_and_the_drift_alerts_fire(kafka_bootstrap: str, topic_prefix: str,
                                                        tmp_path: Path) -> None:
    labels_topic = f"{topic_prefix}-labels"
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix,
                       topics={"labels": labels_topic, "audit": f"{topic_prefix}-audit"},
                       model={"name": MODEL, "params": {"grace_period": 50}},
                       drift={"detectors": [{"name": "ADWIN", "params": {"delta": 0.001}}],
                              "policies": [{"name": "reset"}]},
                       checkpoint={"directory": str(tmp_path / "ckpt"), "every_events": 500,
                                   "every_seconds": 2},
                       metrics={"rolling_window": 500, "lag_interval_s": 0.5})

    def send(events: list[dict[str, Any]]) -> None:
        """Every 10th event's label comes later, on the labels topic; the others carry theirs."""
        produce_events(kafka_bootstrap, f"{topic_prefix}-in", [{k: v for k, v in e.items() if k != "label" or i % 10}
                                                               for i, e in enumerate(events)])
        produce_events(kafka_bootstrap, labels_topic, [{"id": e["id"], "label": e["label"]}
                                                       for i, e in enumerate(events) if i % 10 == 0])

    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    prom = Prometheus(tmp_path, svc.port)
    start = time.time()
    try:
        svc.wait_ready()
        wait_for(prom.up, 60, "Prometheus scraping the service")
        send(_events(0, 4000, 1, "a-"))
        produce_events(kafka_bootstrap, f"{topic_prefix}-in", [{"features": {"x": 1}}] * 20)  # no id: dead letters
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= 4420, 120, "phase 1 consumed")
        time.sleep(15)  # a baseline of scrapes before the drift
        send(_events(4, 2000, 2, "b-"))
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= 6620, 120, "phase 2 consumed")
        resets = f'driftline_adaptations_total{{action="reset",detector="ADWIN",model="{MODEL}"}}'
        wait_for(lambda: svc.metric(resets) >= 1, 30, "an adaptation")
        time.sleep(8)  # scrapes and rule evaluations after the drift
        assert prom.scrapes() >= 20

        import torch

        gpu = torch.cuda.is_available()
        empty = []
        for dash in DASHBOARDS:
            for panel in dash.panels:
                if (panel.gpu and not gpu) or panel.sync or panel.race:  # (sync and race panels: tests below)
                    continue
                exprs = [e.replace("$instance", f"127.0.0.1:{svc.port}").replace("$model", MODEL)
                         for e, _ in panel.targets]
                if not any(prom.series(e, start) for e in exprs):
                    empty.append(f"{dash.title} / {panel.title}")
            for name, expr, _ in dash.annotations if dash.uid != "driftline-race" else ():
                if not prom.series(expr.replace("$instance", f"127.0.0.1:{svc.port}"), start):
                    empty.append(f"{dash.title} / annotation {name}")
        assert empty == [], f"panels without data: {empty}"

        rules = [r for g in _api(prom.port, "rules")["groups"] for r in g["rules"]]
        assert len(rules) == 7 and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError"))
                                                                            for r in rules]
        alerts = {a["labels"]["alertname"]: a["state"] for a in _api(prom.port, "alerts")["alerts"]}
        assert alerts.get("DriftlineDriftDetected") == "firing", alerts
        assert alerts.get("DriftlineAccuracyDrop") in ("pending", "firing"), alerts
        assert "DriftlineDown" not in alerts
    finally:
        prom.stop()
        assert svc.terminate() == 0, svc.log()


def test_promtool_accepts_the_shipped_config_and_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is required"
    for args in (["check", "config", str(DEPLOY / "prometheus.yml")], ["check", "rules", str(DEPLOY / "alerts.yml")]):
        res = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr


def test_the_group_dashboard_has_data_for_a_member_that_syncs(kafka_bootstrap: str, topic_prefix: str,
                                                             tmp_path: Path) -> None:
    """The sync panels (driftline / group model) against a real Prometheus scraping a member with sync on."""
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix,
                       model={"name": "LogisticRegression", "classes": [False, True]},
                       checkpoint={"every_seconds": 1.0}, sync={"mode": "average", "every_seconds": 1.0},
                       metrics={"lag_interval_s": 0.5})
    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    prom = Prometheus(tmp_path, svc.port)
    start = time.time()
    try:
        svc.wait_ready()
        wait_for(prom.up, 60, "Prometheus scraping the service")
        for part in range(4):
            produce_events(kafka_bootstrap, f"{topic_prefix}-in", _events(0, 500, part, f"s{part}-"))
            time.sleep(4)
        wait_for(lambda: svc.metric("driftline_sync_round") >= 5, 60, "five rounds")
        time.sleep(6)
        group = next(d for d in DASHBOARDS if d.uid == "driftline-group")
        empty = [p.title for p in group.panels
                 if not any(prom.series(e.replace("$instance", f"127.0.0.1:{svc.port}"), start) for e, _ in p.targets)]
        assert empty == [], f"panels without data: {empty}"
        assert all(p.sync for p in group.panels)
    finally:
        prom.stop()
        assert svc.terminate() == 0, svc.log()


def test_the_race_dashboard_has_data_for_a_service_with_challengers(kafka_bootstrap: str, topic_prefix: str,
                                                                   tmp_path: Path) -> None:
    """The champion-and-challengers panels and their promotion annotation against a real Prometheus scraping a
    service with two models, the weaker one serving first."""
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix,
                       models={"prior": {"name": "dummy.PriorClassifier", "serving": True},
                               "tree": {"name": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}}},
                       promotion={"window": 200, "min_events": 200, "cooldown": 200},
                       metrics={"lag_interval_s": 0.5, "rolling_window": 200})
    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    prom = Prometheus(tmp_path, svc.port)
    start = time.time()
    try:
        svc.wait_ready()
        wait_for(prom.up, 60, "Prometheus scraping the service")
        time.sleep(4)  # a scrape before the promotion: the promotion is a change
        for part in range(3):
            produce_events(kafka_bootstrap, f"{topic_prefix}-in", _events(0, 500, part, f"r{part}-"))
            time.sleep(4)
        wait_for(lambda: svc.metric('driftline_model_serving{model="tree"}') == 1, 60, "the promotion")
        time.sleep(6)
        race = next(d for d in DASHBOARDS if d.uid == "driftline-race")
        here = f"127.0.0.1:{svc.port}"
        empty = [p.title for p in race.panels
                 if not any(prom.series(e.replace("$instance", here), start) for e, _ in p.targets)]
        assert empty == [], f"panels without data: {empty}"
        assert all(p.race for p in race.panels)
        assert [n for n, e, _ in race.annotations if not prom.series(e.replace("$instance", here), start)] == []
    finally:
        prom.stop()
        assert svc.terminate() == 0, svc.log()
