"""Property: whatever bytes arrive, no exception escapes the processor, and every record is either
predicted or dead-lettered with a reason (never silently dropped)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import InputLimits, ModelSettings
from driftline.stream.codec import DecodeError, decode_event
from driftline.stream.kafka.writer import FlushResult
from driftline.stream.pipeline import build_processor
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord
from driftline.stream.sink import REASON_HEADER, OutputSink


class MemoryWriter:
    """A RecordWriter that keeps records in memory (for properties that need no broker)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        self.records.append((topic, key, value, dict(headers or ())))

    def flush(self, timeout: float | None = None) -> FlushResult:
        return FlushResult(sent=len(self.records))

    def partitions_for(self, topic: str) -> int:
        return 1

    def close(self, timeout: float = 30.0) -> None:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)
near_events = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=8), st.integers(), st.none())},
    optional={
        "features": st.one_of(st.dictionaries(st.text(max_size=4), json_values, max_size=4), json_values),
        "label": json_values,
        "text": json_values,
        "timestamp": st.one_of(st.text(max_size=12), st.integers()),
        "extra": json_values,
    },
)


def _encode(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(_encode),
    near_events.map(_encode),
    near_events.map(lambda e: _encode(e)[: max(len(_encode(e)) - 3, 0)]),  # truncated
)


def _make() -> tuple[EventProcessor, MemoryWriter]:
    writer = MemoryWriter()
    reg = CollectorRegistry()
    learner = build_learner(ModelSettings(name="GaussianNB"))
    metrics = ServiceMetrics(reg, model=learner.name, task=learner.task)
    sink = OutputSink(writer, "pred", "dlq", metrics)
    return build_processor(learner, sink, metrics, rolling_window=50, max_payload_bytes=150), writer


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(payloads, min_size=1, max_size=20))
def test_every_record_is_predicted_or_dead_lettered(values: list[bytes]) -> None:
    processor, writer = _make()
    records = [InboundRecord("in", 0, i, 0, None, v) for i, v in enumerate(values)]
    result = processor.process(records)
    processor.sink.flush()
    predicted = [r for r in writer.records if r[0] == "pred"]
    dead = [r for r in writer.records if r[0] == "dlq"]
    assert result.consumed == len(values)
    # a record is dead-lettered at decode, or predicted (and then maybe dead-lettered for its label)
    decoded_bad = [d for d in dead if d[3][REASON_HEADER] not in (b"invalid_label", b"unknown_label")]
    assert len(predicted) + len(decoded_bad) == len(values)
    assert {d[3]["driftline.source.offset"] for d in dead} <= {str(i).encode() for i in range(len(values))}
    for _, _, value, headers in dead:
        assert headers[REASON_HEADER] and headers["driftline.error"]
        assert value in values  # original bytes kept
    assert result.learned + result.dead_lettered >= 0 and result.predicted == len(predicted)


near_labels = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", "d"]) | st.text(max_size=3) | st.integers()},
    optional={"label": json_values, "timestamp": st.text(max_size=8), "extra": json_values},
)
small_events = st.fixed_dictionaries(
    {"id": st.sampled_from(["a", "b", "c", "d", "e"]), "features": st.fixed_dictionaries({"x": st.floats(0, 1)})},
    optional={"label": st.sampled_from([0, 1, "z", 0.5, None])},
)
topic_records = st.one_of(
    st.tuples(st.just("labels"), st.one_of(st.binary(max_size=60), near_labels.map(_encode))),
    st.tuples(st.just("in"), st.one_of(small_events.map(_encode), payloads)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(topic_records, min_size=1, max_size=25), st.integers(1, 4))
def test_every_label_record_is_joined_or_dead_lettered(items: list[tuple[str, bytes]], batches: int) -> None:
    """Random events and labels on both topics, in random batches: once the TTL has passed, every
    labels-topic record was either joined (learned from) or dead-lettered with its reason."""
    from driftline.stream.labels import LabelJoin

    writer, reg = MemoryWriter(), CollectorRegistry()
    learner = build_learner(ModelSettings(name="GaussianNB", classes=[0, 1]))
    metrics = ServiceMetrics(reg, model=learner.name, task=learner.task)
    proc = build_processor(learner, OutputSink(writer, "pred", "dlq", metrics), metrics, rolling_window=50,
                          max_payload_bytes=150, join=LabelJoin(10_000, 3), labels_topic="labels")
    records = [InboundRecord(topic, 0, i, i * 100, None, v) for i, (topic, v) in enumerate(items)]
    size = max(1, len(records) // batches)
    for i in range(0, len(records), size):
        proc.process(records[i:i + size])
    clock = InboundRecord("in", 0, len(records), 10**9, None, b'{"id": "clock", "features": {"x": 1.0}}')
    proc.process([clock])  # event time far past the TTL: everything still waiting expires
    assert proc.labels is not None and not proc.labels.join.early
    label_offsets = {str(r.offset).encode() for r in records if r.topic == "labels"}
    dead_labels = [h for t, _, _, h in writer.records
                   if t == "dlq" and h["driftline.source.topic"] == b"labels"]
    assert {h["driftline.source.offset"] for h in dead_labels} <= label_offsets
    joined = reg.get_sample_value("driftline_label_delay_seconds_count") or 0
    assert len(dead_labels) + joined == len(label_offsets)


# -- hostile payloads: every bound, at and past its limit ------------------------------------------------
TIGHT = InputLimits(max_depth=6, max_number_chars=12, max_features=8, max_string_chars=40, max_text_chars=100)


def _event_with(field: str, raw: bytes) -> bytes:
    """An event whose ``field`` (a top-level field, or features.x) holds the raw JSON text ``raw``."""
    if field == "features.x":
        return b'{"id":"h","features":{"x":' + raw + b'},"label":1}'
    return b'{"id":"h","features":{"x":1.0},"' + field.encode() + b'":' + raw + b"}"


_fields = st.sampled_from(["features.x", "id", "key", "text", "label", "timestamp"])
hostile = st.one_of(
    st.builds(lambda f, n, sign: _event_with(f, sign + b"9" * n), _fields, st.integers(1, 6000),
              st.sampled_from([b"", b"-"])),  # huge integers
    st.builds(lambda f, n: _event_with(f, b"1." + b"5" * n + b"e3"), _fields, st.integers(1, 400)),  # long floats
    st.builds(lambda f, d: _event_with(f, b"[" * d + b"]" * d), _fields, st.integers(1, 3000)),  # deep arrays
    st.builds(lambda f, d: _event_with(f, b'{"a":' * d + b"1" + b"}" * d), _fields, st.integers(1, 3000)),
    st.builds(lambda k, n: ('{"id":"h","features":{' + ",".join(f'"{k}":{i}' for i in range(n)) + "}}").encode(),
              st.sampled_from(["a", "\\u0061"]), st.integers(1, 4)),  # duplicate feature names
    st.builds(lambda f, n: (b'{"id":"h","features":{"x":1.0}' + (b',"' + f.encode() + b'":1') * n + b"}"),
              st.sampled_from(["label", "id", "key", "features"]), st.integers(1, 3)),  # duplicate fields
    st.builds(lambda n: json.dumps({"id": "h", "features": {f"f{i}": i for i in range(n)}}).encode(),
              st.integers(0, 50)),  # many features
    st.builds(lambda f, n, c: _event_with(f, json.dumps(c * n).encode()), _fields, st.integers(0, 3000),
              st.sampled_from(["s", "é", "\\", '"', "\u2028", "\ud83d\ude00"])),  # long strings
    st.builds(lambda f, v: _event_with(f, _encode(v)), _fields, json_values),  # every JSON type in every field
    st.builds(lambda data, pos, bad: data[:pos % (len(data) + 1)] + bad + data[pos % (len(data) + 1):],
              near_events.map(_encode), st.integers(0, 10_000),
              st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf4\x90\x80\x80"])),  # invalid UTF-8
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile)
def test_decoding_hostile_bytes_either_succeeds_within_the_bounds_or_names_the_reason(value: bytes) -> None:
    try:
        event = decode_event(value, max_bytes=1_000_000, limits=TIGHT)
    except DecodeError as exc:  # nothing else may escape: no ValueError, RecursionError, MemoryError
        assert exc.reason and str(exc)
        return
    assert len(event.features) <= TIGHT.max_features
    assert all(len(str(abs(v))) <= TIGHT.max_number_chars for v in event.features.values() if isinstance(v, int))
    assert all(len(v) <= TIGHT.max_string_chars for v in event.features.values() if isinstance(v, str))
    assert event.text is None or len(event.text) <= TIGHT.max_text_chars


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(hostile | payloads, min_size=1, max_size=12))
def test_hostile_batches_are_predicted_or_dead_lettered_record_by_record(values: list[bytes]) -> None:
    writer = MemoryWriter()
    learner = build_learner(ModelSettings(name="GaussianNB"))
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    proc = build_processor(learner, OutputSink(writer, "pred", "dlq", metrics), metrics, rolling_window=50,
                           max_payload_bytes=1_000_000, limits=TIGHT)
    result = proc.process([InboundRecord("in", 0, i, 0, None, v) for i, v in enumerate(values)])
    predicted = {int(json.loads(v or b"")["source"]["offset"]) for t, _, v, _ in writer.records if t == "pred"}
    dead = {int(h["driftline.source.offset"]): h[REASON_HEADER] for t, _, _, h in writer.records if t == "dlq"}
    undecoded = {o for o, reason in dead.items() if reason not in (b"invalid_label", b"unknown_label")}
    assert predicted | undecoded == set(range(len(values))) and not predicted & undecoded
    assert b"internal_error" not in dead.values(), "a bound was not checked where it should be"
    assert result.consumed == len(values)


def _png_bytes(w: int, h: int, mode: str, seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (h, w) if mode in ("L", "P") else (h, w, len(mode))
    img = Image.fromarray(rng.integers(0, 255, shape).astype(np.uint8), mode=None if mode != "P" else "L")
    if mode == "P":
        img = img.convert("P")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _flip(raw: bytes, at: int, value: int) -> bytes:
    i = at % len(raw)
    return raw[:i] + bytes([value]) + raw[i + 1:]


images = st.builds(_png_bytes, st.integers(1, 40), st.integers(1, 40), st.sampled_from(["L", "RGB", "RGBA", "P"]),
                   st.integers(0, 10))
image_payloads = st.one_of(
    images.map(_b64),
    st.builds(_flip, images, st.integers(0, 10_000), st.integers(0, 255)).map(_b64),  # corrupted files
    st.builds(lambda raw, cut: raw[: cut % max(len(raw), 1)], images, st.integers(0, 10_000)).map(_b64),  # truncated
    st.binary(max_size=64).map(_b64),
    st.text(max_size=40),
    json_values,
)
tensor_payloads = st.fixed_dictionaries(
    {"shape": st.lists(st.integers(-1, 30), max_size=4) | json_values,
     "dtype": st.sampled_from(["float32", "float64", "uint8", "int64", "complex64", "object", ">f4"]) | json_values,
     "data": st.binary(max_size=4 * 64).map(_b64) | json_values},
    optional={"extra": json_values},
)
media_events = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=6)},
    optional={"image": image_payloads, "tensor": tensor_payloads, "text": st.text(max_size=10),
              "features": st.fixed_dictionaries({"x": st.floats(0, 1)}), "label": st.sampled_from([0, 1, 2, "z", 0.5])},
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(media_events.map(_encode), min_size=1, max_size=12))
def test_every_image_or_tensor_record_is_predicted_or_dead_lettered(values: list[bytes]) -> None:
    """Images (valid, corrupted, truncated, not images at all) and tensors (any shape, dtype, data) sent to an
    image model: each record is predicted or dead-lettered with its reason; nothing escapes."""
    writer = MemoryWriter()
    learner = build_learner(ModelSettings(name="GaussianNB", backbone={
        "kind": "pixels", "image": {"mode": "L", "resize": [8, 8]}, "device": "cpu"}))
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    processor = build_processor(learner, OutputSink(writer, "pred", "dlq", metrics), metrics, rolling_window=50,
                                max_payload_bytes=1_000_000)
    result = processor.process([InboundRecord("in", 0, i, 0, None, v) for i, v in enumerate(values)])
    processor.sink.flush()
    predicted = [r for r in writer.records if r[0] == "pred"]
    dead = [r for r in writer.records if r[0] == "dlq"]
    decoded_bad = [d for d in dead if d[3][REASON_HEADER] not in (b"invalid_label", b"unknown_label")]
    assert result.consumed == len(values)
    assert len(predicted) + len(decoded_bad) == len(values)
    for _, _, value, headers in dead:
        assert headers[REASON_HEADER] and headers["driftline.error"] and value in values
