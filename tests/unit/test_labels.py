"""The delayed-label join in the processor: labels after, before and never; bounds; state."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftline.learners.checkpoint import CheckpointError
from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import ModelSettings
from driftline.stream.label_stage import LabelStage
from driftline.stream.labels import LabelJoin
from driftline.stream.observers import Ledger, Quality
from driftline.stream.pipeline import build_processor
from driftline.stream.records import InboundRecord
from driftline.stream.sink import REASON_HEADER, OutputSink
from tests.unit.test_property_bad_input import MemoryWriter

SEC = 1000


class Harness:
    def __init__(self, ttl_s: float = 60, max_pending: int = 1000, classes: list[Any] | None = None) -> None:
        self.writer, self.reg = MemoryWriter(), CollectorRegistry()
        learner = build_learner(ModelSettings(name="GaussianNB", classes=classes))
        self.metrics = ServiceMetrics(self.reg, model=learner.name, task=learner.task)
        sink = OutputSink(self.writer, "pred", "dlq", self.metrics)
        self.proc = build_processor(learner, sink, self.metrics, rolling_window=10, max_payload_bytes=10_000,
                                   join=LabelJoin(int(ttl_s * SEC), max_pending), labels_topic="labels",
                                   expired_topic="expired")
        self.offsets = {"in": 0, "labels": 0}

    def _rec(self, topic: str, value: bytes, ts_s: float) -> InboundRecord:
        self.offsets[topic] += 1
        return InboundRecord(topic, 0, self.offsets[topic] - 1, int(ts_s * SEC), None, value)

    def event(self, eid: str, x: float, ts_s: float, label: Any = None) -> InboundRecord:
        ev: dict[str, Any] = {"id": eid, "features": {"x": x}}
        if label is not None:
            ev["label"] = label
        return self._rec("in", json.dumps(ev).encode(), ts_s)

    def label(self, eid: str, label: Any, ts_s: float) -> InboundRecord:
        return self._rec("labels", json.dumps({"id": eid, "label": label}).encode(), ts_s)

    def dead(self) -> list[tuple[bytes, bytes]]:
        return [(h[REASON_HEADER], h["driftline.source.topic"]) for t, _, _, h in self.writer.records if t == "dlq"]

    def value(self, name: str, **labels: str) -> float | None:
        return self.reg.get_sample_value(name, labels)


def test_label_after_its_event_is_learned_and_scores_the_earlier_prediction() -> None:
    h = Harness()
    res = h.proc.process([h.event("a", 1.0, 10), h.event("b", 5.0, 11)])
    assert (res.predicted, res.learned) == (2, 0) and len(h.proc.require(LabelStage).join.pending) == 2
    before = h.proc.learner.state_dict()
    res = h.proc.process([h.label("a", 1, 40)])
    assert res.learned == 1 and h.proc.require(Ledger).learned == 1 and h.proc.learner.updates == 1
    assert h.proc.learner.state_dict() != before
    assert h.proc.require(Quality).tracker.n == 1  # scored: the prediction made at t=10 (no model yet: None != 1)
    assert h.proc.require(Quality).tracker.cumulative_accuracy == 0.0
    assert h.value("driftline_label_delay_seconds_sum") == 30.0
    assert h.value("driftline_pending_labels", side="predictions") == 1
    assert h.value("driftline_label_coverage_ratio", model="GaussianNB") == 0.5


def test_label_before_its_event_waits_and_is_learned_when_the_event_comes() -> None:
    h = Harness()
    h.proc.process([h.label("a", 1, 10)])
    assert h.value("driftline_pending_labels", side="labels") == 1
    res = h.proc.process([h.event("a", 1.0, 12)])
    assert (res.predicted, res.learned) == (1, 1)
    assert not h.proc.require(LabelStage).join.early and not h.proc.require(LabelStage).join.pending
    assert not [t for t, *_ in h.writer.records if t == "dlq"]


def test_never_labeled_predictions_expire_in_event_time_and_are_published() -> None:
    h = Harness(ttl_s=60)
    h.proc.process([h.event("a", 1.0, 0), h.event("b", 1.0, 30)])
    h.proc.process([h.event("c", 1.0, 70)])  # watermark 70: "a" (t=0) is past the 60 s TTL
    assert h.value("driftline_labels_expired_total", reason="ttl") == 1
    expired = [json.loads(v) for t, _, v, _ in h.writer.records if t == "expired"]
    assert [e["id"] for e in expired] == ["a"] and expired[0]["event"]["features"] == {"x": 1.0}
    assert expired[0]["reason"] == "ttl" and expired[0]["event_timestamp_ms"] == 0
    # a label for the expired id is dead-lettered at once, naming why
    res = h.proc.process([h.label("a", 1, 80)])
    assert res.dead_lettered == 1 and h.dead() == [(b"label_expired", b"labels")]


def test_label_for_an_unknown_id_waits_its_ttl_then_is_dead_lettered() -> None:
    h = Harness(ttl_s=60)
    h.proc.process([h.label("ghost", 1, 0)])
    assert h.dead() == []
    h.proc.process([h.event("z", 1.0, 61)])
    assert h.dead() == [(b"label_unknown_id", b"labels")]
    assert h.value("driftline_dead_letters_total", reason="label_unknown_id") == 1


def test_label_for_an_event_already_learned_is_dead_lettered() -> None:
    h = Harness()
    h.proc.process([h.event("a", 1.0, 0, label=1), h.event("b", 2.0, 1)])
    res = h.proc.process([h.label("a", 0, 2), h.label("b", 1, 3), h.label("b", 0, 4)])
    assert res.learned == 1
    assert h.dead() == [(b"label_already_learned", b"labels"), (b"label_already_learned", b"labels")]


def test_max_pending_expires_the_oldest_by_capacity() -> None:
    h = Harness(max_pending=2)
    h.proc.process([h.event(f"e{i}", 1.0, i) for i in range(5)])
    assert list(h.proc.require(LabelStage).join.pending) == ["e3", "e4"]
    assert h.value("driftline_labels_expired_total", reason="capacity") == 3


def test_pending_joins_are_part_of_the_state() -> None:
    h = Harness()
    h.proc.process([h.event("a", 1.0, 0), h.label("early", 0, 1)])
    state = pickle.loads(pickle.dumps(h.proc.state_dict()))
    h2 = Harness()
    h2.proc.load_state_dict(state)
    res = h2.proc.process([h2.label("a", 1, 5), h2.event("early", 3.0, 6)])
    assert res.learned == 2 and h2.proc.require(Ledger).learned == 2


def test_a_newer_state_format_is_refused_with_what_to_do_and_the_current_one_reads() -> None:
    h = Harness()
    h.proc.process([h.event("a", 1.0, 0)])
    join = h.proc.require(LabelStage).join
    state = join.state_dict()
    assert state["format"] == 3
    with pytest.raises(CheckpointError, match="format 4; this driftline reads formats 1-3"):
        Harness().proc.require(LabelStage).join.load_state_dict({**state, "format": 4})
    other = Harness().proc.require(LabelStage).join
    other.load_state_dict(pickle.loads(pickle.dumps(state)))
    assert list(other.pending) == ["a"]


def test_bad_label_records_are_dead_lettered_with_their_reason() -> None:
    h = Harness(classes=[0, 1])
    h.proc.process([h.event("a", 1.0, 0)])
    bad = [h._rec("labels", b"{not json", 1), h._rec("labels", b'{"id": "a"}', 2),
           h._rec("labels", b'{"id": "a", "label": NaN}', 3), h.label("a", 7, 4)]
    res = h.proc.process(bad)
    assert [r for r, _ in h.dead()] == [b"not_json", b"invalid_event", b"non_finite", b"unknown_label"]
    assert res.learned == 0 and h.proc.learner.updates == 0


def test_a_waiting_label_is_dead_lettered_when_its_event_brings_its_own() -> None:
    h = Harness()
    h.proc.process([h.label("a", 0, 1)])
    res = h.proc.process([h.event("a", 1.0, 2, label=1)])
    assert res.learned == 1 and h.dead() == [(b"label_already_learned", b"labels")]
    assert not h.proc.require(LabelStage).join.early


def test_an_event_redelivered_after_its_label_was_learned_does_not_wait_for_a_label_again() -> None:
    """At-least-once: a member that saved its state and died before committing the offsets gets the event again
    on restart (or its partition's next owner does); its label was learned and will not come again, so the
    event must not wait (it would sit in the pending gauge until its ttl)."""
    h = Harness()
    h.proc.process([h.event("a", 1.0, 10), h.label("a", 1, 11)])
    stage = h.proc.require(LabelStage)
    assert not stage.join.pending
    res = h.proc.process([h.event("a", 1.0, 10)])  # redelivered
    assert res.predicted == 1 and res.learned == 0 and not res.dead_lettered
    assert not stage.join.pending and stage.redelivered == 1
