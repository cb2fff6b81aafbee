from __future__ import annotations

import json

import pytest

from driftline.stream import codec
from driftline.stream.codec import DecodeError, decode_event, encode_event, encode_prediction

GOOD = {"id": "e1", "features": {"x": 1.5, "n": 3, "c": "fr"}, "label": 1}


def test_decodes_a_valid_event() -> None:
    ev = decode_event(json.dumps(GOOD).encode())
    assert ev.id == "e1"
    assert ev.features == {"x": 1.5, "n": 3, "c": "fr"}
    assert ev.label == 1 and type(ev.label) is int
    assert decode_event(encode_event(ev)) == ev


def test_label_types_are_kept() -> None:
    for label in (True, "spam", 3, 2.5):
        ev = decode_event(json.dumps({**GOOD, "label": label}).encode())
        assert ev.label == label and type(ev.label) is type(label)


@pytest.mark.parametrize(
    ("payload", "reason", "names"),
    [
        (b"\xff\xfe\x00garbage", codec.NOT_UTF8, "UTF-8"),
        (b"{not json", codec.NOT_JSON, "not JSON"),
        (b"[1, 2, 3]", codec.NOT_OBJECT, "list"),
        (b'"just a string"', codec.NOT_OBJECT, "str"),
        (b'{"features": {"x": 1}}', codec.MISSING_ID, "id"),
        (b'{"id": 7, "features": {"x": 1}}', codec.WRONG_TYPE, "id"),
        (b'{"id": "a", "features": {"x": [1]}}', codec.WRONG_TYPE, "features.x"),
        (b'{"id": "a", "features": {"x": true}}', codec.WRONG_TYPE, "features.x"),
        (b'{"id": "a", "features": {"x": 1}, "label": {"a": 1}}', codec.WRONG_TYPE, "label"),
        (b'{"id": "a", "features": {"x": NaN}}', codec.NON_FINITE, "NaN"),
        (b'{"id": "a", "features": {"x": Infinity}}', codec.NON_FINITE, "Infinity"),
        (b'{"id": "a", "features": {"x": -Infinity}}', codec.NON_FINITE, "Infinity"),
        (b'{"id": "a", "features": {"x": 1e999}}', codec.NON_FINITE, "features.x"),
        (b'{"id": "a", "features": {"x": 1}, "lable": 1}', codec.INVALID_EVENT, "lable"),
        (b'{"id": "a"}', codec.INVALID_EVENT, "neither features nor text"),
        (b'{"id": "", "features": {"x": 1}}', codec.INVALID_EVENT, "id"),
        (b"", codec.EMPTY_PAYLOAD, "no value"),
        (None, codec.EMPTY_PAYLOAD, "no value"),
    ],
)
def test_bad_records_get_a_reason_and_a_message_naming_the_problem(payload: bytes | None, reason: str,
                                                                   names: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(payload)
    assert info.value.reason == reason
    assert names in str(info.value)


def test_payload_size_limit() -> None:
    big = json.dumps({"id": "a", "features": {"x": 1}, "text": "y" * 5000}).encode()
    with pytest.raises(DecodeError) as info:
        decode_event(big, max_bytes=1000)
    assert info.value.reason == codec.PAYLOAD_TOO_LARGE
    assert str(len(big)) in str(info.value)
    assert decode_event(big, max_bytes=10_000).text == "y" * 5000


def test_prediction_record_round_trips_as_json() -> None:
    raw = encode_prediction(event_id="e1", prediction=1, proba={0: 0.25, 1: 0.75}, model="LogisticRegression",
                            model_version=1, model_updates=10, latency_ms=0.123456, source={"topic": "t",
                            "partition": 0, "offset": 5}, predicted_at_ms=123)
    rec = json.loads(raw)
    assert rec["id"] == "e1" and rec["prediction"] == 1
    assert rec["proba"] == {"0": 0.25, "1": 0.75}
    assert rec["model_version"] == 1 and rec["model_updates"] == 10
    assert rec["source"] == {"topic": "t", "partition": 0, "offset": 5}
    raw = encode_prediction(event_id="e2", prediction=True, proba={False: float("nan"), True: 1.0}, model="m",
                            model_version=1, model_updates=0, latency_ms=1.0, source={}, predicted_at_ms=0)
    assert json.loads(raw)["proba"] == {"false": None, "true": 1.0}
