"""driftline's core types: the event schema, labels, predictions and the errors a learner raises for
one event. This module imports nothing of driftline's but `driftline.media` (the payload types); every
other layer may import it.

An event is a JSON object::

    {"id": "ev-1", "timestamp": "2026-11-21T10:00:00Z", "key": "user-7",
     "features": {"age": 31, "country": "fr"}, "text": null, "label": 1}

``id`` is required; ``features`` maps names to finite numbers or strings; ``image`` (base64 of a PNG, JPEG
or WebP file) and ``tensor`` (shape, dtype, base64 of the raw array) are described in `driftline.media`;
an event carries at least one of features, text, image or tensor, and not both an image and a tensor.
``label`` is optional (absent: the event is predicted only). Unknown top-level fields are rejected so that
a typo (``"lable"``) is reported instead of silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    model_validator,
)

from driftline.media import ImageData, TensorData

Label = StrictBool | StrictInt | StrictStr
FeatureValue = StrictInt | StrictFloat | StrictStr
Task = Literal["classification", "regression"]

MAX_ID_LENGTH = 256


class Event(BaseModel):
    """One validated input event (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, str_max_length=1_000_000)

    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    timestamp: datetime | None = None
    key: StrictStr | None = None
    features: dict[StrictStr, FeatureValue] = Field(default_factory=dict)
    text: StrictStr | None = None
    image: ImageData | None = None
    tensor: TensorData | None = None
    label: Label | StrictFloat | None = None

    @model_validator(mode="after")
    def _has_payload(self) -> Event:
        if not self.features and self.text is None and self.image is None and self.tensor is None:
            raise ValueError("event has none of features, text, image or tensor")
        if self.image is not None and self.tensor is not None:
            raise ValueError("event has both an image and a tensor (send one of them)")
        return self

    def payloads(self) -> str:
        """What the event carries, in words (for error messages): e.g. "`features` and `text`"."""
        names = [f"`{n}`" for n, v in (("features", self.features), ("text", self.text), ("image", self.image),
                                        ("tensor", self.tensor)) if v]
        return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


class LabelRecord(BaseModel):
    """A label arriving after its event, on the labels topic: ``{"id", "label", "timestamp"}``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    label: Label | StrictFloat
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a learner says about one event before seeing its label.

    ``value`` is None when the model cannot predict yet (nothing learned).
    ``proba`` holds class probabilities for classifiers (None for regressors).
    """

    value: Label | float | None
    proba: Mapping[Label, float] | None = None


class EventRejected(ValueError):
    """An event (or its label) a learner cannot take; ``reason`` is a bounded dead-letter reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LabelError(EventRejected):
    """A label the learner cannot learn from (``invalid_label``, ``unknown_label``)."""


class InputError(EventRejected):
    """An input this learner cannot predict from, e.g. a text-only event for a tabular model
    (``input_kind_mismatch``)."""


INPUT_KIND_MISMATCH = "input_kind_mismatch"
