"""The Learner protocol every model behind the service implements, the base its learners share, and
helpers for labels, states and class columns."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

from driftline.core import Event, Label, LabelError, Prediction, Task
from driftline.learners.capabilities import Capability, background_trained


class LearnerBase:
    """What every learner shares: the (version, updates) counters, its declared capabilities (none by
    default) and `spawn`."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    _version = 1
    _updates = 0

    @property
    def version(self) -> int:
        return self._version

    @property
    def updates(self) -> int:
        return self._updates

    @property
    def features_dropped(self) -> int:
        """Feature occurrences left out because the model's bound on feature names was reached."""
        return 0

    def set_version(self, version: int) -> None:
        self._version = version

    def spawn(self, state: Mapping[str, Any], *, detach: bool = False) -> Self:
        """Another learner of this kind holding ``state``: it shares this one's frozen backbone and
        batch cache (so it costs a head, not a model), or with ``detach`` owns copies of them (for a
        learner whose backbone an adaptation changes in place)."""
        memo = self._detached_memo() if detach else {id(o): o for o in self._shared_parts()}
        clone = copy.deepcopy(self, memo)
        # a shared backbone's normalisation statistics belong to the active learner: leave them be
        clone.load_state_dict(state if detach else {k: v for k, v in state.items() if k != "norm"})
        return clone

    def _shared_parts(self) -> list[object]:
        """What a spawned learner shares with this one instead of copying (a backbone and its batch cache)."""
        return []

    def _detached_memo(self) -> dict[int, Any]:
        """deepcopy memo entries of a detached spawn (e.g. a batch cache that starts empty)."""
        return {}

    def _norm_state(self) -> dict[str, Any] | None:
        """The backbone's batch-norm statistics (adapted by ``adabn``), or None without any."""
        return None

    def _load_norm_state(self, state: Mapping[str, Any]) -> None:
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def predict_one(self, x: Event) -> Prediction:
        raise NotImplementedError

    def learn_one(self, x: Event, y: Label | float) -> None:
        raise NotImplementedError


@runtime_checkable
class Learner(Protocol):
    """Test-then-train model: predict an event first, learn from it once its label is known.

    ``version`` is the model generation (bumped when the model is replaced: restore, swap,
    adaptation); ``updates`` counts labels learned, so (version, updates) names a model state.
    What a learner can do beyond this protocol it declares in ``capabilities``
    (`driftline.learners.capabilities`). The pipeline predicts and learns one event at a time in
    stream order (test-then-train within a batch); batch work goes into `prepare_batch`, so there is no
    batch predict/learn here (the Continual learner has its own `predict_many`, one pinned version).
    """

    task: Task
    name: str
    capabilities: ClassVar[frozenset[Capability]]

    @property
    def version(self) -> int: ...

    @property
    def updates(self) -> int: ...

    @property
    def features_dropped(self) -> int: ...

    def prepare_batch(self, xs: Sequence[Event]) -> None:
        """The events about to be predicted, in stream order: a learner with a backbone embeds them
        all at once here. Optional work: predict/learn must still work for events not prepared."""
        ...

    def predict_one(self, x: Event) -> Prediction: ...

    def learn_one(self, x: Event, y: Label | float) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def set_version(self, version: int) -> None:
        """Name a new model generation (after a swap, adaptation or rollback)."""
        ...

    def spawn(self, state: Mapping[str, Any], *, detach: bool = False) -> Learner:
        """A second learner of this kind holding ``state`` (background learners, rollback shadows)."""
        ...


def check_fingerprint(saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None) -> None:
    """A state must be loaded into a learner with the same backbone (None: no backbone)."""
    saved = dict(saved) if saved is not None else None
    current = dict(current) if current is not None else None
    if saved == current:
        return
    if saved is None or current is None:
        raise ValueError(f"the state was learned {'without' if saved is None else 'with'} a backbone "
                         f"({saved!r}), this model has {current!r}")
    diff = sorted(k for k in {*saved, *current} if saved.get(k) != current.get(k))
    raise ValueError(f"the state was learned on a different backbone (differs in {', '.join(diff)}): "
                     f"state {saved!r}, config {current!r}")


def check_label_type(task: Task, y: Label | float) -> Label | float:
    """A label of the right type for the task (regression: a number, returned as float), else
    `LabelError("invalid_label")`."""
    if task == "regression":
        if isinstance(y, bool) or not isinstance(y, int | float):
            raise LabelError("invalid_label", f"regression label must be a number, got {y!r}")
        return float(y)
    if isinstance(y, float):
        raise LabelError("invalid_label", f"classification label must be a string, int or bool, got {y!r}")
    return y


def check_state_header(state: Mapping[str, Any], kind: str, what: str, task: Task, name: str) -> None:
    """A state must be of this learner's kind, task and model name (ValueError saying which differs)."""
    if state.get("kind") != kind:
        raise ValueError(f"not a {what} state: kind={state.get('kind')!r}")
    if (state["task"], state["name"]) != (task, name):
        raise ValueError(f"state is for {state['task']} model {state['name']!r}, this learner is {task} model {name!r}")


TOO_MANY_CLASSES = "too_many_classes"


def class_column(y: Label, index: dict[Label, int], classes: list[Label], fixed: tuple[Label, ...] | None,
                 max_classes: int) -> int:
    """The output column of label ``y`` for a head with a fixed class set, or one that takes new classes as
    they come (appended to ``classes``/``index``) up to ``max_classes``; LabelError otherwise."""
    idx = index.get(y)
    if idx is not None:
        return idx
    if fixed is not None:
        raise LabelError("unknown_label", f"label {y!r} is not one of the configured classes {fixed!r}")
    if len(classes) >= max_classes:
        raise LabelError(TOO_MANY_CLASSES, f"label {y!r} would be class number {len(classes) + 1}; "
                         f"the head has room for model.params.max_classes={max_classes}")
    index[y] = len(classes)
    classes.append(y)
    return index[y]


@contextlib.contextmanager
def offline(learner: Learner) -> Iterator[None]:
    """For replay and pretraining: a learner that trains in the background (Continual) trains each window
    in the calling thread as it closes, so results do not depend on timing; when the block ends normally,
    what is still pending (the last, partial window) is trained too."""
    trained = background_trained(learner)
    if trained is not None:
        trained.set_synchronous(True)
    yield
    if trained is not None:
        trained.drain()
