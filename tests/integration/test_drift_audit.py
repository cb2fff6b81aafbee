"""Drift detections through the real broker: audit records on the audit topic, counted in Prometheus."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, produce_events, read_topic, wait_for, write_config

pytestmark = [pytest.mark.integration]


def test_detections_are_audited_and_counted(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    events = list(itertools.islice(from_generator("STAGGER", params={"classification_function": 0}, seed=1,
                                                  drift_at=3000, drift_params={"classification_function": 2},
                                                  id_prefix="s-"), 6000))
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events)
    audit = f"{topic_prefix}-audit"
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, topics={"audit": audit},
                       model={"name": "HoeffdingTreeClassifier"},
                       drift={"detectors": [{"name": "ADWIN"}, {"name": "DDM", "params": {"drift_threshold": 3.5}}]})
    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= 6000, 120, "6000 consumed")
        m = svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()
    records = [json.loads(r.value) for r in read_topic(kafka_bootstrap, audit)]
    drifts = [r for r in records if r["level"] == "drift"]
    assert {r["detector"] for r in drifts} == {"ADWIN", "DDM"}
    for detector in ("ADWIN", "DDM"):
        # ADWIN also flags the error rate *falling* while the model first learns (before 3000): it detects
        # any change of the mean; what matters here is the rise after the switch
        after = [r["labeled"] for r in drifts if r["detector"] == detector and r["labeled"] > 3000]
        assert after and after[0] <= 3250, (detector, [r["labeled"] for r in drifts])
        assert m[f'driftline_drift_detections_total{{detector="{detector}",level="drift"}}'] == \
            sum(r["detector"] == detector for r in drifts)
    assert all(r["type"] == "detection" and r["model"] == "HoeffdingTreeClassifier" and r["event_id"]
               for r in records)
    assert "drift signalled by ADWIN" in (tmp_path / "svc.log").read_text()


def test_adaptations_are_audited_counted_and_change_the_model_version(kafka_bootstrap: str, topic_prefix: str,
                                                                      tmp_path: Path) -> None:
    events = list(itertools.islice(from_generator("STAGGER", params={"classification_function": 0}, seed=2,
                                                  drift_at=3000, drift_params={"classification_function": 2},
                                                  id_prefix="a-"), 6000))
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events)
    audit = f"{topic_prefix}-audit"
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, topics={"audit": audit},
                       model={"name": "HoeffdingTreeClassifier"},
                       drift={"detectors": [{"name": "ADWIN"}], "policies": [{"name": "reset"}],
                              "guard": {"window": 300}})
    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= 6000, 120, "6000 consumed")
        m = svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()
    records = [json.loads(r.value) for r in read_topic(kafka_bootstrap, audit)]
    resets = [r for r in records if r["type"] == "adaptation" and r["action"] == "reset"]
    assert resets and 3000 < resets[0]["labeled"] <= 3250, records
    first = resets[0]
    assert (first["detector"], first["model_version_after"]) == ("ADWIN", first["model_version_before"] + 1)
    assert first["details"]["relearned"] >= 30
    outcome = [r for r in records if r["type"] == "adaptation" and r["action"] in ("guard_passed", "rollback")]
    assert outcome and outcome[0]["details"]["window"] == 300
    assert m['driftline_adaptations_total{action="reset",detector="ADWIN"}'] == len(resets)
    versions = {json.loads(r.value)["model_version"] for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")}
    assert max(versions) >= 2  # predictions after the adaptation name the new model version
    assert "adaptation reset (detector ADWIN)" in (tmp_path / "svc.log").read_text()
