"""What a learner can do beyond the `Learner` protocol, declared by its class.

A learner class lists its capabilities in ``capabilities`` (a frozenset of `Capability`); the pipeline
asks through the accessors below and gets the learner typed as that capability's protocol, or None.
Nothing probes a learner's attributes: a capability exists because the class declares it, and the
contract suite checks that every learner implements exactly what it declares.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from driftline.core import Event, Label

if TYPE_CHECKING:
    from driftline.learners.backbones import Backbone
    from driftline.learners.base import Learner
    from driftline.learners.mergeable import Params


class Capability(enum.Enum):
    BACKGROUND_TRAINED = "background_trained"
    HAS_BACKBONE = "has_backbone"
    FINE_TUNABLE = "fine_tunable"
    ADVERSARIAL = "adversarially_adaptable"
    SELF_ADAPTING = "self_adapting"
    MERGEABLE = "mergeable"


@runtime_checkable
class BackgroundTrained(Protocol):
    """Trains off the poll loop (the Continual learner): the run loop applies back-pressure while it is
    saturated, puts off a save point while it trains a window, drains it on a graceful stop and closes it; replay and
    pretraining make it synchronous."""

    @property
    def latest_version(self) -> int:
        """The newest published model version (the next batch predicts with it)."""
        ...

    def saturated(self) -> bool: ...

    def backlog(self) -> int: ...

    def drain(self, timeout: float | None = None) -> bool: ...

    def hold_between_windows(self) -> bool:
        """Whether no window is in training now: a snapshot (`state_dict`) or a read of the parameters would not
        wait. Either way training starts no new window until `release_hold` (or a few seconds pass), so a step
        put off now finds the learner between windows soon after."""
        ...

    def release_hold(self) -> None:
        """The step `hold_between_windows` held training for is done: windows train again."""
        ...

    def close(self) -> None: ...

    def set_synchronous(self, on: bool = True) -> None: ...


@runtime_checkable
class HasBackbone(Protocol):
    """A pretrained backbone in front of the head: batch-norm re-estimation (adabn), input drift on
    embeddings (mmd)."""

    backbone: Backbone

    def embedding(self, x: Event) -> list[float]: ...


@runtime_checkable
class FineTunable(Protocol):
    """Mini-batch steps over the head and the unfrozen backbone layers (replay_burst)."""

    def fine_tune(self, xs: Sequence[Event], ys: Sequence[Label | float], *, batch_size: int = 32) -> None: ...


@runtime_checkable
class AdversariallyAdaptable(Protocol):
    """Domain-adversarial training of the head's representation (the adversarial policy)."""

    def adversarial_unsupported(self) -> str | None:
        """Why this configuration cannot be adapted adversarially (None: it can)."""
        ...

    def adapt_adversarial(self, source: Sequence[tuple[Event, Label | float]], target: Sequence[Event], *,
                          epochs: int, lr: float, weight: float, batch_size: int, seed: int) -> dict[str, Any]: ...


@runtime_checkable
class SelfAdapting(Protocol):
    """Adapts by its own means (the Continual learner's strategy): the adaptation ladder does not apply."""

    ladder_unsupported: str


@runtime_checkable
class Mergeable(Protocol):
    """Its parameters are data that members of a group average (``sync.mode: average``,
    `driftline.learners.mergeable`)."""

    @property
    def sync_kind(self) -> str:
        """What two members must agree on to merge (model, task, classes, preprocessing): JSON."""
        ...

    def sync_params(self) -> Params: ...

    def load_sync_params(self, params: Params) -> None: ...


PROTOCOLS: dict[Capability, type] = {
    Capability.BACKGROUND_TRAINED: BackgroundTrained,
    Capability.HAS_BACKBONE: HasBackbone,
    Capability.FINE_TUNABLE: FineTunable,
    Capability.ADVERSARIAL: AdversariallyAdaptable,
    Capability.SELF_ADAPTING: SelfAdapting,
    Capability.MERGEABLE: Mergeable,
}


def background_trained(learner: Learner) -> BackgroundTrained | None:
    return cast(BackgroundTrained, learner) if Capability.BACKGROUND_TRAINED in learner.capabilities else None


def has_backbone(learner: Learner) -> HasBackbone | None:
    return cast(HasBackbone, learner) if Capability.HAS_BACKBONE in learner.capabilities else None


def fine_tunable(learner: Learner) -> FineTunable | None:
    return cast(FineTunable, learner) if Capability.FINE_TUNABLE in learner.capabilities else None


def adversarially_adaptable(learner: Learner) -> AdversariallyAdaptable | None:
    return cast(AdversariallyAdaptable, learner) if Capability.ADVERSARIAL in learner.capabilities else None


def self_adapting(learner: Learner) -> SelfAdapting | None:
    return cast(SelfAdapting, learner) if Capability.SELF_ADAPTING in learner.capabilities else None


def mergeable(learner: Learner) -> Mergeable | None:
    return cast(Mergeable, learner) if Capability.MERGEABLE in learner.capabilities else None
