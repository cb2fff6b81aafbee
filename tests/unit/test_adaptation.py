"""The ladder around the policies: rollback guard, cooldown, escalation, sources, and nothing-to-do."""

from __future__ import annotations

import itertools
from pathlib import Path

from driftline.adapters.detectors import DRIFT
from driftline.learners.factory import build_learner
from tests.contract.test_policy_contract import Harness, accuracy, detection, river, stream
from tests.contract.test_policy_contract import stream as contract_stream


def test_guard_rolls_back_a_harmful_adaptation_without_losing_labels(tmp_path: Path) -> None:
    # no drift at all: resetting a well-trained model to a fresh one that relearns 30 events is harmful
    learner = build_learner(river(tmp_path))
    h = Harness(learner, [{"name": "reset", "params": {"min_events": 30}}], guard={"window": 300})
    h.feed(stream("A", 2000, 1))
    h.adapter.on_detection(detection(since=5))
    assert h.records[-1]["action"] == "reset" and learner.version == 2
    shadow = h.adapter.guard.shadow if h.adapter.guard else None
    assert shadow is not None
    h.feed(stream("A", 300, 2, start=2000))
    rollback = h.records[-1]
    assert rollback["action"] == "rollback", h.records
    d = rollback["details"]
    assert d["of"] == "reset" and d["window"] == 300 and d["error_adapted"] > d["error_unadapted"]
    assert (rollback["model_version_before"], rollback["model_version_after"], learner.version) == (2, 3, 3)
    # the model now is the shadow: the unadapted model that also learned the guard window's labels
    probe = list(stream("A", 200, 9, start=9000))
    assert [learner.predict_one(e).proba for e in probe] == [shadow.predict_one(e).proba for e in probe]
    assert learner.updates == 2300
    assert h.count("ADWIN", "rollback") == 1 and h.adapter.guard is None
    assert h.adapter.ladder.escalate  # the next drift starts one rung higher


def test_guard_keeps_a_helpful_adaptation(tmp_path: Path) -> None:
    learner = build_learner(river(tmp_path))
    h = Harness(learner, [{"name": "reset", "params": {"min_events": 30}}], guard={"window": 300})
    h.feed(stream("A", 2000, 1))
    h.feed(stream("B", 100, 2))
    h.adapter.on_detection(detection(since=100))
    h.feed(stream("B", 300, 3, start=100))
    assert h.records[-1]["action"] == "guard_passed"
    d = h.records[-1]["details"]
    assert d["error_adapted"] < d["error_unadapted"]
    assert learner.version == 2 and accuracy(learner, list(stream("B", 200, 9, start=9000))) > 0.85


def test_cooldown_suppresses_and_a_quick_second_drift_escalates(tmp_path: Path) -> None:
    h = Harness(build_learner(river(tmp_path)), [{"name": "reset"}, {"name": "replay_burst"}],
                cooldown=100, escalate_within=500, guard={"window": 0})
    h.feed(stream("A", 300, 1))
    h.adapter.on_detection(detection())
    h.feed(stream("A", 50, 2, start=300))
    h.adapter.on_detection(detection())  # within the cooldown: no action
    assert [r["action"] for r in h.records] == ["reset"]
    h.feed(stream("A", 100, 3, start=350))
    h.adapter.on_detection(detection())  # after the cooldown, within escalate_within: rung 2
    assert [r["action"] for r in h.records] == ["reset", "replay_burst"] and h.records[-1]["rung"] == 1
    h.feed(stream("A", 600, 4, start=450))
    h.adapter.on_detection(detection())  # long after: back to the bottom
    assert h.records[-1]["action"] == "reset" and h.records[-1]["rung"] == 0


def test_rungs_act_only_on_their_source_and_none_is_recorded(tmp_path: Path) -> None:
    h = Harness(build_learner(river(tmp_path)), [{"name": "reset"}], guard={"window": 0})
    h.feed(stream("A", 100, 1))
    h.adapter.on_detection(detection(source="input"))  # an input drift: reset acts on error drifts only
    r = h.records[-1]
    assert (r["action"], r["level"]) == ("none", DRIFT) and h.count("KS", "none") == 1
    assert h.learner.version == 1


def test_warning_starts_and_max_age_drops_the_background_learner(tmp_path: Path) -> None:
    h = Harness(build_learner(river(tmp_path)), [{"name": "background", "params": {"max_age": 50}}])
    h.feed(stream("A", 100, 1))
    h.adapter.on_detection(detection("warning"))
    assert h.records[-1]["action"] == "background_started" and h.adapter.background is not None
    h.feed(stream("A", 51, 2, start=100))
    assert h.records[-1]["action"] == "background_dropped" and h.adapter.background is None
    assert h.count("ADWIN", "background_started") == 0  # not adaptations: audited and logged only


def test_processor_wires_input_detection_and_the_ladder_with_audit_records() -> None:
    import json

    import orjson
    from prometheus_client import CollectorRegistry

    from driftline.monitoring.metrics import ServiceMetrics
    from driftline.settings import Settings
    from driftline.stream.observers import InputDrift
    from driftline.stream.pipeline import processor_from_settings
    from driftline.stream.records import InboundRecord
    from driftline.stream.sink import OutputSink
    from tests.unit.test_property_bad_input import MemoryWriter

    s = Settings(topics={"audit": "audit"}, model={"name": "GaussianNB"},
                 drift={"input": {"kind": "ks"}, "policies": [{"name": "reset"}]})
    learner = build_learner(s.model)
    writer, registry = MemoryWriter(), CollectorRegistry()
    metrics = ServiceMetrics(registry, model=learner.name, task=learner.task)
    proc = processor_from_settings(s, learner, OutputSink(writer, "p", "d", metrics), metrics, labels_topic=None,
                                        audit_topic="audit")
    stream = list(itertools.chain(contract_stream("A", 2000, 1), contract_stream("C", 1000, 2, start=2000)))
    for i in range(0, len(stream), 100):
        proc.process([InboundRecord("in", 0, i + j, 1_700_000_000_000 + i + j, None,
                                    orjson.dumps(e.model_dump(mode="json", exclude_none=True)))
                      for j, e in enumerate(stream[i: i + 100])])
    audit = [json.loads(v or b"") for t, _, v, _ in writer.records if t == "audit"]
    detections = [r for r in audit if r["type"] == "detection"]
    assert [r["source"] for r in detections] == ["input"] and 2000 < detections[0]["labeled"] <= 2750
    assert detections[0]["statistic"]["feature"] in ("x0", "x1")
    # reset learns from labels: it does not act on an input detection, and says so
    assert [r["action"] for r in audit if r["type"] == "adaptation"] == ["none"]
    assert registry.get_sample_value("driftline_drift_detections_total",
                                     {"model": "GaussianNB", "detector": "KS", "level": "drift"}) == 1
    restored = processor_from_settings(s, build_learner(s.model), OutputSink(MemoryWriter(), "p", "d", metrics),
                                            metrics, labels_topic=None)
    restored.load_state_dict(proc.state_dict())
    restored_input = restored.find(InputDrift)
    assert restored_input is not None and restored_input.monitor.seen == 3000
