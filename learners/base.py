"""The Learner protocol every model behind the service implements, and its value types."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from driftline.stream.event import Event, Label

Task = Literal["classification", "regression"]


@dataclass(frozen=True, slots=True)
class Prediction:
    """What a learner says about one event before seeing its label.

    ``value`` is None when the model cannot predict yet (nothing learned).
    ``proba`` holds class probabilities for classifiers (None for regressors).
    """

    value: Label | float | None
    proba: Mapping[Label, float] | None = None


class EventRejected(ValueError):
    """An event (or its label) this learner cannot take; ``reason`` is a bounded dead-letter reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LabelError(EventRejected):
    """A label the learner cannot learn from (``invalid_label``, ``unknown_label``)."""


class InputError(EventRejected):
    """An input this learner cannot predict from, e.g. a text-only event for a tabular model
    (``input_kind_mismatch``)."""


INPUT_KIND_MISMATCH = "input_kind_mismatch"


@runtime_checkable
class Learner(Protocol):
    """Test-then-train model: predict an event first, learn from it once its label is known.

    ``version`` is the model generation (bumped when the model is replaced: restore, swap,
    adaptation); ``updates`` counts labels learned, so (version, updates) names a model state.
    """

    task: Task
    name: str

    @property
    def version(self) -> int: ...

    @property
    def updates(self) -> int: ...

    def predict_one(self, x: Event) -> Prediction: ...

    def learn_one(self, x: Event, y: Label | float) -> None: ...

    def predict_many(self, xs: Sequence[Event]) -> list[Prediction]: ...

    def learn_many(self, xs: Sequence[Event], ys: Sequence[Label | float]) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...
