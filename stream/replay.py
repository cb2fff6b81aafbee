"""`driftline replay`: the service's pipeline over a recorded stream, as fast as possible (or
time-compressed), with simulated label delay, deterministic for a seed.

The same `EventProcessor` the service runs (same config, learner, dead-letter rules and label
join) processes the records in batches; outputs are collected in memory instead of going to
Kafka. Label delay is simulated by splitting each labeled event into the event (unlabeled) and a
labels-topic record ``delay`` later in event time, both merged in timestamp order, so delayed
labels take the same join the live service uses.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from driftline.adapters.detectors import Detection
from driftline.core import Event
from driftline.errors import ConfigError
from driftline.learners.base import Learner, offline
from driftline.monitoring.metrics import ServiceMetrics
from driftline.progress import progress_bar
from driftline.settings import Settings
from driftline.stream.kafka.writer import FlushResult
from driftline.stream.label_stage import LabelStage
from driftline.stream.observers import (
    NO_DETECTIONS,
    Adaptation,
    DetectionLog,
    Ledger,
    Observer,
    Predicted,
    Quality,
    Served,
)
from driftline.stream.pipeline import processor_from_settings
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord
from driftline.stream.sink import REASON_HEADER, OutputSink

EVENTS_TOPIC = "replay.events"
LABELS_TOPIC = "replay.labels"


@dataclass(frozen=True)
class LabelDelay:
    """``none`` (labels stay on the events), ``fixed`` (``low`` seconds) or ``random`` (uniform in
    [low, high] seconds, drawn from the replay's seeded generator)."""

    kind: str = "none"
    low: float = 0.0
    high: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> LabelDelay:
        """``none``, ``30`` (fixed seconds) or ``random:5:600``."""
        if text in (None, "", "none"):
            return cls()
        assert text is not None
        try:
            if text.startswith("random:"):
                low, high = (float(v) for v in text.split(":")[1:3])
                if not 0 <= low <= high:
                    raise ValueError
                return cls("random", low, high)
            value = float(text)
            if value < 0:
                raise ValueError
            return cls("fixed", value, value)
        except ValueError:
            raise ConfigError(f"--label-delay: {text!r} is not 'none', SECONDS or 'random:MIN:MAX' "
                              "(non-negative, MIN <= MAX)") from None

    def draw(self, rng: random.Random) -> float:
        return self.low if self.kind == "fixed" else rng.uniform(self.low, self.high)


PREDICTIONS_TOPIC = "replay.predictions"
DEAD_LETTER_TOPIC = "replay.dead-letter"


class CollectingWriter:
    """A RecordWriter that keeps what a replay reports of its outputs (replays do not write to Kafka): the
    dead letters by reason."""

    def __init__(self) -> None:
        self.dead: Counter[str] = Counter()

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        if topic == DEAD_LETTER_TOPIC:
            self.dead[dict(headers or ()).get(REASON_HEADER, b"?").decode()] += 1

    def flush(self, timeout: float | None = None) -> FlushResult:
        return FlushResult(sent=0)

    def partitions_for(self, topic: str) -> int:
        return 1

    def close(self, timeout: float = 30.0) -> None:
        pass


class PredictionLog(Observer):
    """Each prediction's latency (ms) in order and, with ``keep_values``, its value (for benchmarks that
    score every event)."""

    def __init__(self, *, keep_values: bool = False) -> None:
        self.latencies_ms: list[float] = []
        self.values: list[Any] | None = [] if keep_values else None

    def on_predicted(self, p: Predicted) -> Sequence[Detection]:
        self.latencies_ms.append(p.latency_s * 1000.0)
        if self.values is not None:
            self.values.append(p.prediction.value)
        return NO_DETECTIONS


@dataclass
class Summary:
    """What a replay measured. Everything but the timings is a deterministic function of the
    config, the records and the seed (see `deterministic`)."""

    events: int = 0
    predicted: int = 0
    learned: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)
    labels_expired: int = 0
    metric: str = "accuracy"
    cumulative: float | None = None
    final_rolling: float | None = None
    model: str = ""
    model_version: int = 0
    model_updates: int = 0
    ledger_digest: str = ""
    label_delay: str = "none"
    seed: int = 0
    wall_s: float = 0.0
    events_per_s: float = 0.0
    predict_ms_p50: float = 0.0
    predict_ms_p99: float = 0.0
    # series for the report: (labeled events so far, rolling metric), sampled after each batch
    rolling: list[tuple[int, float]] = field(default_factory=list, repr=False)
    predict_ms: list[float] = field(default_factory=list, repr=False)
    # drift detector signals: (labeled events when it fired, detector, level)
    detections: list[tuple[int, str, str]] = field(default_factory=list)
    # adaptation actions of the ladder: (labeled events when it acted, action, detector that triggered it)
    adaptations: list[tuple[int, str, str]] = field(default_factory=list)
    label_delays_s: list[float] = field(default_factory=list, repr=False)
    # champion and challengers: each model's own prequential metric (cumulative, final rolling), its rolling
    # series, and each change of champion (labeled events then, from, to, reason); `cumulative` and `rolling`
    # above are then those of what was served
    models: dict[str, dict[str, float | None]] = field(default_factory=dict)
    model_rolling: dict[str, list[tuple[int, float]]] = field(default_factory=dict, repr=False)
    promotions: list[tuple[int, str, str, str]] = field(default_factory=list)

    def deterministic(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("wall_s", "events_per_s", "predict_ms_p50", "predict_ms_p99", "predict_ms"):
            d.pop(k)
        return d

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("rolling", "predict_ms", "label_delays_s", "model_rolling"):
            d.pop(k)
        return d


def _timestamp_ms(event: Event, index: int, start_ms: int, interval_ms: int) -> int:
    if event.timestamp is not None:
        ts = event.timestamp if event.timestamp.tzinfo else event.timestamp.replace(tzinfo=dt.UTC)
        return int(ts.timestamp() * 1000)
    return start_ms + index * interval_ms


def simulate(events: Iterable[Event | dict[str, Any]], delay: LabelDelay, seed: int, *,
             start_ms: int = 1_700_000_000_000, interval_ms: int = 1000,
             delays_out: list[float] | None = None) -> Iterator[InboundRecord]:
    """Input records in event-time order: events (unlabeled when the delay is simulated) and their
    labels-topic records ``delay`` later. Events without a timestamp are ``interval_ms`` apart. An
    item that is not a valid event goes through as it is, to be dead-lettered by the pipeline."""
    rng = random.Random(seed)
    heap: list[tuple[int, int, InboundRecord]] = []
    seq = itertools.count()
    offsets = {EVENTS_TOPIC: 0, LABELS_TOPIC: 0}

    def record(topic: str, ts: int, key: str, value: bytes) -> InboundRecord:
        off = offsets[topic]
        offsets[topic] += 1
        return InboundRecord(topic, 0, off, ts, key.encode(), value)

    for i, item in enumerate(events):
        if isinstance(item, Event):
            ev = item
        else:
            try:
                ev = Event.model_validate(item)
            except ValueError:
                yield record(EVENTS_TOPIC, start_ms + i * interval_ms, str(item.get("id", i)),
                             json.dumps(item, default=str).encode())
                continue
        ts = _timestamp_ms(ev, i, start_ms, interval_ms)
        if delay.kind != "none" and ev.label is not None:
            d = delay.draw(rng)
            if delays_out is not None:
                delays_out.append(d)
            label = orjson.dumps({"id": ev.id, "label": ev.label})
            heapq.heappush(heap, (ts + int(d * 1000), next(seq), record(LABELS_TOPIC, ts + int(d * 1000), ev.id,
                                                                          label)))
            ev = ev.model_copy(update={"label": None})
        # everything due before this event goes first (the heap holds only future labels)
        while heap and heap[0][0] <= ts:
            yield heapq.heappop(heap)[2]
        yield record(EVENTS_TOPIC, ts, ev.id, ev.model_dump_json(exclude_none=True).encode())
    while heap:
        yield heapq.heappop(heap)[2]


def replay(settings: Settings, learner: Learner | Mapping[str, Learner], records: Iterable[InboundRecord], *,
           label_delay: LabelDelay,
           seed: int, batch_size: int = 100, speed: float | None = None, total: int | None = None,
           progress: bool | None = None, label_delays: Sequence[float] = ()) -> Summary:
    """Run the pipeline over ``records`` (as `simulate` yields them, or a topic range).

    ``label_delays``: the delays `simulate` drew (its ``delays_out``); read once the records are consumed.
    """
    writer = CollectingWriter()
    first = learner[settings.serving_model] if isinstance(learner, Mapping) else learner
    metrics = ServiceMetrics(CollectorRegistry(), model=settings.serving_model if settings.models else first.name,
                             task=first.task)
    sink = OutputSink(writer, PREDICTIONS_TOPIC, DEAD_LETTER_TOPIC, metrics)
    log = PredictionLog()
    processor = processor_from_settings(settings, learner, sink, metrics, labels_topic=LABELS_TOPIC, extra=[log])
    quality, ledger = processor.find(Served) or processor.require(Quality), processor.require(Ledger)
    lanes = [(lane.name, lane.find(Quality)) for lane in processor.lanes] if len(processor.lanes) > 1 else []
    summary = Summary(model=processor.champion.name, label_delay=_describe(label_delay), seed=seed)
    bar = progress_bar(total, desc="replay", unit="rec", show=progress)
    t0 = time.perf_counter()
    first_ts: int | None = None
    it = iter(records)
    with contextlib.ExitStack() as stack:
        for lane in processor.lanes:
            stack.enter_context(offline(lane.learner))
        while batch := list(itertools.islice(it, batch_size)):
            if speed:
                first_ts = batch[0].timestamp_ms if first_ts is None else first_ts
                due = (batch[-1].timestamp_ms - first_ts) / 1000.0 / speed
                wait = due - (time.perf_counter() - t0)
                if wait > 0:
                    time.sleep(wait)
            processor.process(batch)
            summary.events += sum(1 for r in batch if r.topic != LABELS_TOPIC)
            if quality.tracker.n:
                summary.rolling.append((ledger.learned, float(quality.tracker.rolling)))
            for name, q in lanes:
                if q is not None and q.tracker.n:
                    summary.model_rolling.setdefault(name, []).append((ledger.learned, float(q.tracker.rolling)))
            bar.update(len(batch))
        bar.close()
    summary.wall_s = time.perf_counter() - t0
    summary.events_per_s = summary.events / summary.wall_s if summary.wall_s > 0 else 0.0
    _finish(summary, processor, writer, log)
    summary.label_delays_s = list(label_delays)
    return summary


def _finish(summary: Summary, processor: EventProcessor, writer: CollectingWriter, log: PredictionLog) -> None:
    t, ledger = (processor.find(Served) or processor.require(Quality)).tracker, processor.require(Ledger)
    if len(processor.lanes) > 1:
        for lane in processor.lanes:
            q = lane.find(Quality)
            if q is not None:
                mt = q.tracker
                summary.models[lane.name] = {"cumulative": mt.cumulative if mt.n else None,
                                             "final_rolling": mt.rolling if mt.n else None}
        promotions = processor.contest.promotions if processor.contest is not None else ()
        summary.promotions = [(p.labeled, p.previous, p.champion, p.reason) for p in promotions]
        summary.model = processor.champion.name
    summary.metric = t.metric
    summary.cumulative = t.cumulative if t.n else None
    summary.final_rolling = t.rolling if t.n else None
    summary.predicted = ledger.predicted
    summary.learned = ledger.learned
    summary.dead_lettered = dict(sorted(writer.dead.items()))
    labels = processor.find(LabelStage)
    summary.labels_expired = labels.expired if labels is not None else 0
    summary.model_version = processor.learner.version
    summary.model_updates = processor.learner.updates
    summary.ledger_digest = f"{ledger.learned}:{ledger.digest:016x}"
    summary.detections = [(d.labeled, d.detector, d.level) for d in processor.require(DetectionLog).latest]
    adaptation = processor.find(Adaptation)
    if adaptation is not None:
        summary.adaptations = [(a.labeled, a.action, a.detector) for a in adaptation.adapter.actions]
    summary.predict_ms = log.latencies_ms
    if summary.predict_ms:
        ordered = sorted(summary.predict_ms)
        summary.predict_ms_p50 = ordered[len(ordered) // 2]
        summary.predict_ms_p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _describe(d: LabelDelay) -> str:
    return {"none": "none", "fixed": f"fixed {d.low:g}s"}.get(d.kind, f"random {d.low:g}-{d.high:g}s")


def write_summary(path: str, summary: Summary) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(summary.to_json(), fh, indent=2)

