"""Drift detections through the real broker: audit records on the audit topic, counted in Prometheus."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, produce_events, read_topic, wait_for, write_config

pytestmark = [pytest.mark.integration]


def _run_on_drifting_stagger(bootstrap: str, prefix: str, tmp_path: Path, seed: int,
                             drift: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The service over 6,000 STAGGER events (concept 0, then 2 from event 3,000) with ``drift`` settings:
    the audit records it published and its metrics at the end."""
    events = list(itertools.islice(from_generator("STAGGER", params={"classification_function": 0}, seed=seed,
                                                  drift_at=3000, drift_params={"classification_function": 2},
                                                  id_prefix=f"s{seed}-"), 6000))
    produce_events(bootstrap, f"{prefix}-in", events)
    audit = f"{prefix}-audit"
    cfg = write_config(tmp_path / "c.yaml", bootstrap, prefix, topics={"audit": audit},
                       model={"name": "HoeffdingTreeClassifier"}, drift=drift)
    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= 6000, 120, "6000 consumed")
        m = svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()
    return [json.loads(r.value) for r in read_topic(bootstrap, audit)], m


def test_detections_are_audited_and_counted(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    records, m = _run_on_drifting_stagger(kafka_bootstrap, topic_prefix, tmp_path, 1, {
        "detectors": [{"name": "ADWIN"}, {"name": "DDM", "params": {"drift_threshold": 3.5}}]})
    drifts = [r for r in records if r["level"] == "drift"]
    assert {r["detector"] for r in drifts} == {"ADWIN", "DDM"}
    for detector in ("ADWIN", "DDM"):
        # (a fall of the error while the model first learns is level improvement, not a drift); what
        # matters here is the rise after the switch
        after = [r["labeled"] for r in drifts if r["detector"] == detector and r["labeled"] > 3000]
        assert after and after[0] <= 3250, (detector, [r["labeled"] for r in drifts])
        key = f'driftline_drift_detections_total{{detector="{detector}",level="drift",model="HoeffdingTreeClassifier"}}'
        assert m[key] == \
            sum(r["detector"] == detector for r in drifts)
    assert all(r["type"] == "detection" and r["model"] == "HoeffdingTreeClassifier" and r["event_id"]
               for r in records)
    assert "drift signalled by ADWIN" in (tmp_path / "svc.log").read_text()


def test_adaptations_are_audited_counted_and_change_the_model_version(kafka_bootstrap: str, topic_prefix: str,
                                                                      tmp_path: Path) -> None:
    records, m = _run_on_drifting_stagger(kafka_bootstrap, topic_prefix, tmp_path, 2, {
        "detectors": [{"name": "ADWIN"}], "policies": [{"name": "reset"}], "guard": {"window": 300}})
    resets = [r for r in records if r["type"] == "adaptation" and r["action"] == "reset"]
    assert resets and 3000 < resets[0]["labeled"] <= 3250, records
    first = resets[0]
    assert (first["detector"], first["model_version_after"]) == ("ADWIN", first["model_version_before"] + 1)
    assert first["details"]["relearned"] >= 30
    outcome = [r for r in records if r["type"] == "adaptation" and r["action"] in ("guard_passed", "rollback")]
    assert outcome and outcome[0]["details"]["window"] == 300
    assert m['driftline_adaptations_total{action="reset",detector="ADWIN",model="HoeffdingTreeClassifier"}'] == \
        len(resets)
    versions = {json.loads(r.value)["model_version"] for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")}
    assert max(versions) >= 2  # predictions after the adaptation name the new model version
    assert "adaptation reset (detector ADWIN)" in (tmp_path / "svc.log").read_text()
