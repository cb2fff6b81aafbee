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
        (b'{"id": "a"}', codec.INVALID_EVENT, "none of features, text, image or tensor"),
        (b'{"id": "", "features": {"x": 1}}', codec.INVALID_EVENT, "id"),
        (b"", codec.EMPTY_PAYLOAD, "no value"),
        (None, codec.EMPTY_PAYLOAD, "no value"),
        # the poison pill that stopped the service: Python refuses to convert a 5,000-digit integer
        (b'{"id": "a", "features": {"x": ' + b"9" * 5000 + b"}}", codec.NUMBER_TOO_LONG, "limits.max_number_chars"),
        (b'{"id": "a", "features": {"x": ' + b"9" * 41 + b"}}", codec.NUMBER_TOO_LONG, "features.x: an integer of 41"),
        (b'{"id": "a", "features": {"x": 1}, "label": ' + b"7" * 60 + b"}", codec.NUMBER_TOO_LONG, "digits"),
        (b'{"id": "a", "features": {"x": 1}, "label": 1, "label": 0}', codec.DUPLICATE_KEY, "'label' appears twice"),
        (b'{"id": "a", "features": {"x": 1, "x": 2}}', codec.DUPLICATE_KEY, "'x' appears twice"),
        (b'{"id": "a", "features": {"x": 1, "\\u0078": 2}}', codec.DUPLICATE_KEY, "'x' appears twice"),
        (b'{"id"  :  "a", "features": {"x" : 1, "x":2}}', codec.DUPLICATE_KEY, "'x' appears twice"),
        (b'{"id": "a", "features": {"x": ' + b"[" * 5000 + b"]" * 5000 + b"}}", codec.TOO_DEEP, "limits.max_depth"),
        (b'{"id": "a", "features": {"x": "' + b"s" * 10_001 + b'"}}', codec.STRING_TOO_LONG, "features.x"),
        (b'{"id": "a", "features": {"' + b"n" * 10_001 + b'": 1}}', codec.STRING_TOO_LONG, "a name of 10001"),
        (b'{"id": "a", "features": {"x": 1}, "key": "' + b"k" * 10_001 + b'"}', codec.STRING_TOO_LONG, "key"),
        (b'{"id": "a", "features": {"x": 1}, "label": "' + b"l" * 10_001 + b'"}', codec.STRING_TOO_LONG, "label"),
        (json.dumps({"id": "a", "features": {f"f{i}": 1 for i in range(10_001)}}).encode(),
         codec.TOO_MANY_FEATURES, "10001 names, over the limit of 10000"),
    ],
)
def test_bad_records_get_a_reason_and_a_message_naming_the_problem(payload: bytes | None, reason: str,
                                                                   names: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_event(payload)
    assert info.value.reason == reason
    assert names in str(info.value)


def test_bounds_are_configurable_and_escapes_in_strings_are_not_keys() -> None:
    from driftline.settings import InputLimits

    tight = InputLimits(max_features=2, max_number_chars=3, max_text_chars=5, max_depth=2)
    with pytest.raises(DecodeError, match=r"over the limit of 2 \(limits\.max_features\)"):
        decode_event(b'{"id": "a", "features": {"x": 1, "y": 2, "z": 3}}', limits=tight)
    with pytest.raises(DecodeError, match="an integer of 4 digits"):
        decode_event(b'{"id": "a", "features": {"x": 1000}}', limits=tight)
    with pytest.raises(DecodeError, match="text: 6 characters"):
        decode_event(b'{"id": "a", "text": "abcdef"}', limits=tight)
    assert decode_event(b'{"id": "a", "features": {"x": 999, "y": -999.5}}', limits=tight).features["x"] == 999
    # strings holding quotes, colons and escaped backslashes: still one key each, no false duplicate
    tricky = {"id": 'q"\\":', "features": {'a":': 'b\\":"', "c": 1}, "text": '" : "x": \\'}
    assert decode_event(json.dumps(tricky).encode()).features == tricky["features"]
    assert decode_event(json.dumps(tricky, indent=2).encode()).text == tricky["text"]


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
