from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import ModelSettings
from driftline.stream.dedup import DedupWindow
from driftline.stream.observers import BatchResult, Labeled, Ledger, Observer, Predicted, Quality, id_hash
from driftline.stream.pipeline import build_processor
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord
from driftline.stream.sink import REASON_HEADER, OutputSink
from tests.tiny_models import save_encoder, torch_backbone
from tests.unit.test_property_bad_input import MemoryWriter


def test_window_forgets_the_oldest() -> None:
    w = DedupWindow(3)
    assert [w.seen(x) for x in "abc"] == [False, False, False]
    assert w.seen("a") and len(w) == 3
    assert not w.seen("d")  # evicts "a"
    assert not w.seen("a")  # forgotten, so new again (and evicts "b")
    assert w.seen("c") and not w.seen("b")


def test_state_round_trip_and_configured_size_wins() -> None:
    w = DedupWindow(5)
    for x in "abcde":
        w.seen(x)
    small = DedupWindow(2)
    small.load_state_dict(w.state_dict())
    assert small.seen("e") and small.seen("d") and not small.seen("c")


def _processor(window: int) -> tuple[EventProcessor, MemoryWriter, CollectorRegistry]:
    writer, reg = MemoryWriter(), CollectorRegistry()
    learner = build_learner(ModelSettings(name="GaussianNB"))
    metrics = ServiceMetrics(reg, model=learner.name, task=learner.task)
    sink = OutputSink(writer, "pred", "dlq", metrics)
    return build_processor(learner, sink, metrics, rolling_window=10, max_payload_bytes=10_000,
                          dedup_window=window), writer, reg


def _rec(offset: int, event_id: str) -> InboundRecord:
    value = json.dumps({"id": event_id, "features": {"x": float(offset)}, "label": offset % 2}).encode()
    return InboundRecord("in", 0, offset, 0, None, value)


def test_duplicates_within_the_window_are_dead_lettered_not_learned() -> None:
    proc, writer, reg = _processor(window=100)
    ids = ["a", "b", "a", "c", "b"]
    res = proc.process([_rec(i, x) for i, x in enumerate(ids)])
    assert (res.predicted, res.learned, res.dead_lettered) == (3, 3, 2)
    dead = [h for topic, _, _, h in writer.records if topic == "dlq"]
    assert [h[REASON_HEADER] for h in dead] == [b"duplicate_id", b"duplicate_id"]
    assert [h["driftline.source.offset"] for h in dead] == [b"2", b"4"]
    assert b"'a'" in dead[0]["driftline.error"]
    assert reg.get_sample_value("driftline_dead_letters_total", {"reason": "duplicate_id"}) == 2
    # the window is part of the checkpointed state
    proc2, _, _ = _processor(window=100)
    proc2.load_state_dict(proc.state_dict())
    assert proc2.process([_rec(9, "c")]).dead_lettered == 1


def test_off_by_default() -> None:
    proc, _, _ = _processor(window=0)
    assert proc.process([_rec(0, "a"), _rec(1, "a")]).learned == 2


def test_text_only_event_to_a_tabular_model_is_dead_lettered_unpredicted() -> None:
    proc, writer, _ = _processor(window=0)
    text_only = InboundRecord("in", 0, 7, 0, None, b'{"id": "t", "text": "hello", "label": 1}')
    res = proc.process([_rec(0, "a"), text_only])
    assert (res.predicted, res.dead_lettered) == (1, 1)
    dead = [h for topic, _, _, h in writer.records if topic == "dlq"]
    assert dead[0][REASON_HEADER] == b"input_kind_mismatch" and dead[0]["driftline.source.offset"] == b"7"
    assert [v for topic, _, v, _ in writer.records if topic == "pred" and b'"t"' in (v or b"")] == []


def _text_processor(tmp_path: Path) -> tuple[EventProcessor, MemoryWriter, CollectorRegistry]:
    """A features backbone (torch module) + River head: cheap stand-in for any backbone learner."""
    writer, reg = MemoryWriter(), CollectorRegistry()
    backbone = torch_backbone(save_encoder(tmp_path, in_dim=1), features=["x"], args={"in_dim": 1, "out_dim": 8})
    learner = build_learner(ModelSettings(name="GaussianNB", backbone=backbone))  # type: ignore[arg-type]
    metrics = ServiceMetrics(reg, model=learner.name, task=learner.task)
    sink = OutputSink(writer, "pred", "dlq", metrics)
    return build_processor(learner, sink, metrics, rolling_window=10, max_payload_bytes=10_000), writer, reg


def test_backbone_runs_once_per_batch_and_rejects_events_it_cannot_read(tmp_path: Path) -> None:
    proc, writer, reg = _text_processor(tmp_path)
    module = proc.learner.backbone.module  # type: ignore[attr-defined]
    calls: list[int] = []
    module.register_forward_hook(lambda m, a, out: calls.append(a[0].shape[0]))
    text = json.dumps({"id": "t", "text": "words, no features", "label": 1}).encode()
    recs = [_rec(0, "a"), InboundRecord("in", 0, 1, 0, None, text), _rec(2, "b"), _rec(3, "c")]
    res = proc.process(recs)
    assert calls == [3]  # one backbone call for the three readable events
    assert (res.predicted, res.learned, res.dead_lettered) == (3, 3, 1)
    dead = [h for topic, _, _, h in writer.records if topic == "dlq"]
    assert dead[0][REASON_HEADER] == b"input_kind_mismatch" and dead[0]["driftline.source.offset"] == b"1"
    assert reg.get_sample_value("driftline_backbone_batch_seconds_count", {"model": "GaussianNB"}) == 1


def test_a_failing_batch_preparation_falls_back_to_one_event_at_a_time(tmp_path: Path) -> None:
    proc, _, _ = _text_processor(tmp_path)
    reference, _, _ = _text_processor(tmp_path)

    def broken(events: object) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    proc.learner.prepare_batch = broken  # type: ignore[method-assign]
    recs = [_rec(i, f"e{i}") for i in range(20)]
    res = proc.process(recs)
    assert (res.predicted, res.learned, res.dead_lettered) == (20, 20, 0)
    reference.process(recs)
    assert proc.require(Quality).tracker.state_dict() == reference.require(Quality).tracker.state_dict()


class Counting(Observer):
    """An observer a test adds: one more item in the pipeline's list, nothing else."""

    key = "counting"

    def __init__(self) -> None:
        self.seen: dict[str, int] = {"predicted": 0, "learned": 0, "batches": 0}

    def on_predicted(self, p: Predicted) -> tuple[()]:
        self.seen["predicted"] += 1
        return ()

    def on_learned(self, item: Labeled) -> tuple[()]:
        self.seen["learned"] += 1
        return ()

    def on_batch_end(self, result: BatchResult) -> None:
        self.seen["batches"] += 1

    def state_dict(self) -> dict[str, int]:
        return dict(self.seen)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seen = dict(state)


def _with(extra: Observer) -> EventProcessor:
    learner = build_learner(ModelSettings(name="GaussianNB"))
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    return build_processor(learner, OutputSink(MemoryWriter(), "pred", "dlq", metrics), metrics, rolling_window=10,
                           max_payload_bytes=10_000, extra=[extra])


def test_an_added_observer_sees_every_hook_and_is_checkpointed_under_its_key() -> None:
    counting = Counting()
    proc = _with(counting)
    bad = InboundRecord("in", 0, 99, 0, None, b"{not json")
    res = proc.process([*(_rec(i, f"e{i}") for i in range(5)), bad])
    assert (res.predicted, res.learned, res.dead_lettered) == (5, 5, 1)
    assert counting.seen == {"predicted": 5, "learned": 5, "batches": 1}
    state = proc.state_dict()
    assert state["counting"] == counting.seen
    restored = Counting()
    _with(restored).load_state_dict(state)
    assert restored.seen == counting.seen


class Batched(Observer):
    """Takes the learned events once per batch; notes what it got and what the others had seen by then."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.batches_before: list[int] = []
        self.counting: Counting | None = None

    def on_learned_batch(self, items: Sequence[Labeled]) -> None:
        self.calls.append([item.event.id for item in items])
        self.batches_before.append(self.counting.seen["batches"] if self.counting is not None else -1)


def test_batch_observers_get_the_learned_events_once_in_order_before_the_batch_ends() -> None:
    """on_learned_batch: once per batch, its learned events in stream order (not the dead-lettered one), before
    any on_batch_end; the ledger and quality (which take it) count as one event at a time would."""
    batched, counting = Batched(), Counting()
    batched.counting = counting
    learner = build_learner(ModelSettings(name="GaussianNB"))
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    proc = build_processor(learner, OutputSink(MemoryWriter(), "pred", "dlq", metrics), metrics, rolling_window=3,
                           max_payload_bytes=10_000, extra=[batched, counting])
    bad = InboundRecord("in", 0, 99, 0, None, b"{not json")
    proc.process([_rec(0, "a"), _rec(1, "b"), bad, _rec(2, "c")])
    proc.process([])
    proc.process([_rec(3, "d")])
    assert batched.calls == [["a", "b", "c"], ["d"]]
    assert batched.batches_before == [0, 2]  # before the batch's own on_batch_end
    ledger = proc.require(Ledger)
    assert (ledger.learned, ledger.digest) == (4, sum(id_hash(x) for x in "abcd") % 2**64)
    assert proc.require(Quality).tracker.n == 4


class Faulty(Observer):
    """An observer with a bug that one event's id triggers."""

    def on_predicted(self, item: Predicted) -> list[Any]:
        if item.event.id == "e2":
            raise KeyError("a bug only e2 meets")
        return []


def test_whatever_one_record_raises_dead_letters_that_record_and_the_batch_goes_on(monkeypatch: Any) -> None:
    writer = MemoryWriter()
    learner = build_learner(ModelSettings(name="GaussianNB"))
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    proc = build_processor(learner, OutputSink(writer, "pred", "dlq", metrics), metrics, rolling_window=10,
                           max_payload_bytes=10_000, extra=[Faulty()])
    import driftline.stream.routing as routing

    real = routing.decode_event

    def decode(value: bytes | None, **kw: Any) -> Any:  # a decoder bug that only e4's bytes meet
        if value is not None and b'"e4"' in value:
            raise AttributeError("a decoder bug")
        return real(value, **kw)

    monkeypatch.setattr(routing, "decode_event", decode)
    res = proc.process([_rec(i, f"e{i}") for i in range(6)])
    assert (res.consumed, res.dead_lettered) == (6, 2)
    assert res.learned == 4  # e2 was predicted (its prediction is out) but not learned; e4 never decoded
    dead = {json.loads(v or b"{}")["id"]: h for t, _, v, h in writer.records if t == "dlq"}
    assert set(dead) == {"e2", "e4"}
    assert {h[REASON_HEADER] for h in dead.values()} == {b"internal_error"}
    assert dead["e2"]["driftline.error"] == b"processing: KeyError: 'a bug only e2 meets'"
    assert dead["e4"]["driftline.error"] == b"routing: AttributeError: a decoder bug"


def test_a_dead_letter_the_topic_would_refuse_is_cut_to_fit_and_says_so() -> None:
    writer = MemoryWriter()
    learner = build_learner(ModelSettings(name="GaussianNB"))
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    sink = OutputSink(writer, "pred", "dlq", metrics, dead_letter_max_bytes=8192)
    proc = build_processor(learner, sink, metrics, rolling_window=10, max_payload_bytes=100_000)
    near = InboundRecord("in", 0, 7, 0, b"k", b"{not json" + b" " * 20_000, (("trace", b"t" * 100),))
    small = InboundRecord("in", 0, 8, 0, b"k", b"{not json", (("trace", b"t"),))
    assert proc.process([near, small]).dead_lettered == 2
    (_, key, value, headers), (_, _, small_value, small_headers) = [r for r in writer.records if r[0] == "dlq"]
    size = len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers.items())
    assert size <= 8192 - 512 and value is not None and near.value is not None and near.value.startswith(value)
    assert headers["driftline.truncated"] == b"true" and headers["driftline.headers_dropped"] == b"1"
    assert headers["driftline.original_bytes"] == str(len(near.value)).encode() and "trace" not in headers
    assert headers[REASON_HEADER] == b"not_json"
    assert small_value == small.value and small_headers["trace"] == b"t" and "driftline.truncated" not in small_headers
