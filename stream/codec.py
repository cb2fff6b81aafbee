"""JSON codec: Kafka record bytes -> validated `Event`, and prediction records -> bytes.

Decoding failures raise `DecodeError` with a bounded ``reason`` code (used as a metric label and
a dead-letter header) and a message naming the offending field and value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from driftline.core import Event, LabelRecord

M = TypeVar("M", bound=BaseModel)

# Reason codes: bounded, stable, documented in README ("Dead letters").
NOT_UTF8 = "not_utf8"
NOT_JSON = "not_json"
NOT_OBJECT = "not_object"
MISSING_ID = "missing_id"
WRONG_TYPE = "wrong_type"
NON_FINITE = "non_finite"
INVALID_EVENT = "invalid_event"
PAYLOAD_TOO_LARGE = "payload_too_large"
EMPTY_PAYLOAD = "empty_payload"


class DecodeError(ValueError):
    """A record that is not a valid event. ``reason`` is a bounded code, str(self) the detail."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _reject_constant(name: str) -> float:
    # json accepts NaN/Infinity/-Infinity literals by default; they are not JSON.
    raise DecodeError(NON_FINITE, f"non-finite number literal {name} is not allowed")


_PRIORITY = (MISSING_ID, NON_FINITE, WRONG_TYPE, INVALID_EVENT)


def _classify(exc: ValidationError) -> tuple[str, str]:
    """The most specific reason code among the errors, and one line naming each field."""
    found = {INVALID_EVENT}
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "<event>"
        kind = err["type"]
        if kind == "missing" and err["loc"] == ("id",):
            found.add(MISSING_ID)
        elif kind == "finite_number":
            found.add(NON_FINITE)
        elif kind.endswith("_type") or kind.endswith("_parsing"):
            found.add(WRONG_TYPE)
        shown = repr(err.get("input"))
        if len(shown) > 80:
            shown = shown[:77] + "..."
        got = "" if kind in ("missing", "extra_forbidden") else f" (got {shown})"
        msg = "unknown field" if kind == "extra_forbidden" else err["msg"]
        parts.append(f"{loc}: {msg}{got}")
    reason = next(r for r in _PRIORITY if r in found)
    return reason, "; ".join(parts)


def decode_event(value: bytes | None, *, max_bytes: int = 1_000_000) -> Event:
    """Parse and validate one record value. Raises DecodeError.

    Valid records take pydantic's native JSON path; anything it rejects is parsed again step by
    step so the error carries the precise reason (not UTF-8, not JSON, non-finite, ...).
    """
    return _decode(Event, value, max_bytes)


def decode_label(value: bytes | None, *, max_bytes: int = 1_000_000) -> LabelRecord:
    """A labels-topic record (``{"id", "label", "timestamp"}``); DecodeError with the same reasons."""
    return _decode(LabelRecord, value, max_bytes)


def _decode(model: type[M], value: bytes | None, max_bytes: int) -> M:
    if value is None or len(value) == 0:
        raise DecodeError(EMPTY_PAYLOAD, "record has no value (null or empty payload)")
    if len(value) > max_bytes:
        raise DecodeError(PAYLOAD_TOO_LARGE, f"payload is {len(value)} bytes, over the limit of {max_bytes}")
    try:
        return model.model_validate_json(value)
    except ValidationError:
        return _decode_precisely(model, value)


def _decode_precisely(model: type[M], value: bytes) -> M:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(NOT_UTF8, f"payload is not UTF-8: {exc}") from None
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except DecodeError:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        raise DecodeError(NOT_JSON, f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError(NOT_OBJECT, f"payload is JSON {type(obj).__name__}, expected an object")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        reason, detail = _classify(exc)
        raise DecodeError(reason, detail) from None


def encode_event(event: Event) -> bytes:
    """Serialize an event the way `decode_event` reads it (None fields left out)."""
    return event.model_dump_json(exclude_none=True).encode("utf-8")


def encode_prediction(
    *,
    event_id: str,
    prediction: Any,
    proba: Mapping[Any, float] | None,
    model: str,
    model_version: int,
    model_updates: int,
    latency_ms: float,
    source: Mapping[str, Any],
    predicted_at_ms: int,
) -> bytes:
    """The prediction record published to the output topic (JSON).

    ``proba`` keys are the labels as JSON spells them (``"1"``, ``"true"``, ``"spam"``); a
    non-finite number is written as null.
    """
    return orjson.dumps(
        {
            "id": event_id,
            "prediction": prediction,
            "proba": proba,
            "model": model,
            "model_version": model_version,
            "model_updates": model_updates,
            "latency_ms": round(latency_ms, 4),
            "predicted_at_ms": predicted_at_ms,
            "source": source,
        },
        option=orjson.OPT_NON_STR_KEYS,
    )
