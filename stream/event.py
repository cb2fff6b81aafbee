"""The event schema: what a producer writes to the input topic, validated by pydantic.

An event is a JSON object::

    {"id": "ev-1", "timestamp": "2026-11-21T10:00:00Z", "key": "user-7",
     "features": {"age": 31, "country": "fr"}, "text": null, "label": 1}

``id`` is required; ``features`` maps names to finite numbers or strings; ``label`` is optional
(absent: the event is predicted only). Unknown top-level fields are rejected so that a typo
(``"lable"``) is reported instead of silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

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

Label = StrictBool | StrictInt | StrictStr
FeatureValue = StrictInt | StrictFloat | StrictStr

MAX_ID_LENGTH = 256


class Event(BaseModel):
    """One validated input event (frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, str_max_length=1_000_000)

    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    timestamp: datetime | None = None
    key: StrictStr | None = None
    features: dict[StrictStr, FeatureValue] = Field(default_factory=dict)
    text: StrictStr | None = None
    label: Label | StrictFloat | None = None

    @model_validator(mode="after")
    def _has_payload(self) -> Event:
        if not self.features and self.text is None:
            raise ValueError("event has neither features nor text")
        return self


class LabelRecord(BaseModel):
    """A label arriving after its event, on the labels topic: ``{"id", "label", "timestamp"}``."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH)]
    label: Label | StrictFloat
    timestamp: datetime | None = None
