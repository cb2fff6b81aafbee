"""Adaptation policies: what the service does to the model when drift is detected.

Each policy is one rung of the ladder in ``drift.policies``. `Policy.check` runs at start-up (a
policy that cannot apply to the configured model is a ConfigError that says why);
`Policy.ready` says whether it can act now (else the ladder tries the next rung); `Policy.apply`
changes the active learner in place and returns what it did, for the audit record. Both get a
`PolicyContext`: what a policy may read (the recent windows, the replay sample, the detection) and
change (the learner; the background learner, which it may take).

Policies are registered by name in `POLICIES` (one `@register` line per class): the settings validate
``drift.policies`` names against it, and the contract suite runs every registered policy.

- ``background``: a learner started at a warning from the starting model learns beside the active
  one; at the drift it is swapped in (River's DriftRetraining idea).
- ``reset``: the model goes back to the starting model (pretrained, or fresh) and relearns the
  recent window, by default only the events after the detector's estimated change point.
- ``replay_burst``: fine-tunes (head and unfrozen backbone layers) on the recent window mixed with a
  replay sample of the stream so far, for a few epochs.
- ``adabn``: re-estimates the backbone's batch-norm statistics on the recent inputs (label-free).
- ``adversarial``: domain-adversarial training (gradient reversal against a domain discriminator) of
  the head's representation on unlabeled recent inputs against the labeled replay (label-free on
  the new domain).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from driftline.adapters.context import PolicyContext
from driftline.core import Event, Label
from driftline.errors import ConfigError
from driftline.learners.base import Learner
from driftline.learners.capabilities import adversarially_adaptable, fine_tunable, has_backbone
from driftline.params import validate


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BackgroundParams(_Params):
    start: Literal["initial", "current"] = "initial"  # what the background learner starts from
    max_age: int = Field(5000, ge=1)  # labeled events it waits for a drift before it is dropped
    min_learned: int = Field(30, ge=0)  # a background learner that learned fewer is not swapped in


class ResetParams(_Params):
    since_change: bool = True  # relearn only what came after the estimated change point (when known)
    min_events: int = Field(30, ge=0)  # relearn at least this many recent events
    epochs: int = Field(1, ge=1, le=100)


class ReplayBurstParams(_Params):
    epochs: int = Field(2, ge=1, le=100)
    replay_ratio: float = Field(1.0, ge=0, le=100)  # replayed events per recent event
    batch_size: int = Field(32, ge=1, le=4096)  # torch heads: mini-batch size


class AdaBNParams(_Params):
    min_events: int = Field(100, ge=2)  # recent inputs needed to re-estimate the statistics


class AdversarialParams(_Params):
    epochs: int = Field(3, ge=1, le=100)
    lr: float = Field(1e-3, gt=0, le=1)
    weight: float = Field(0.3, ge=0, le=100)  # gradient-reversal strength (the domain loss weight)
    batch_size: int = Field(64, ge=2, le=4096)
    min_events: int = Field(100, ge=2)  # recent inputs and replayed labeled events needed


class Policy:
    name: ClassVar[str]
    params_model: ClassVar[type[_Params]]
    touches_backbone: ClassVar[bool] = False  # its rollback shadow needs its own copy of the backbone
    needs_labels: ClassVar[bool] = True  # learns from labeled events: acts on error-stream detections only
    once: ClassVar[bool] = False  # may appear at most once on the ladder

    def __init__(self, params: Mapping[str, Any], where: str) -> None:
        self.params: Any = validate(self.params_model, params, where=f"{where}.params", name=self.name)
        self.where = where

    def check(self, learner: Learner) -> None:
        """Raise ConfigError if this policy cannot work on this learner."""

    def ready(self, ctx: PolicyContext) -> str | None:
        """Why this policy cannot act now (None: it can)."""
        return None

    def apply(self, ctx: PolicyContext) -> dict[str, Any]:
        raise NotImplementedError


POLICIES: dict[str, type[Policy]] = {}
P = TypeVar("P", bound=type[Policy])


def register(cls: P) -> P:
    """Register a policy class under its ``name`` (settings and the contract suite read the registry)."""
    if cls.name in POLICIES:
        raise ValueError(f"a policy named {cls.name!r} is already registered")
    POLICIES[cls.name] = cls
    return cls


@register
class Background(Policy):
    name = "background"
    params_model = BackgroundParams
    once = True

    def ready(self, ctx: PolicyContext) -> str | None:
        bg = ctx.background
        if bg is None:
            return "no background learner (no warning before this drift)"
        if bg.learned < self.params.min_learned:
            return f"the background learner has learned {bg.learned} events (< min_learned {self.params.min_learned})"
        return None

    def apply(self, ctx: PolicyContext) -> dict[str, Any]:
        bg = ctx.take_background()
        ctx.learner.load_state_dict(bg.learner.state_dict())
        return {"background_learned": bg.learned, "background_started_at": bg.started_at}


@register
class Reset(Policy):
    name = "reset"
    params_model = ResetParams

    def apply(self, ctx: PolicyContext) -> dict[str, Any]:
        recent = list(ctx.recent)
        since = ctx.detection.since_change if ctx.detection is not None else None
        if self.params.since_change and since is not None:
            recent = recent[-max(since, self.params.min_events):]
        ctx.learner.load_state_dict(ctx.initial_state)
        for _ in range(self.params.epochs):
            _learn(ctx.learner, recent)
        return {"relearned": len(recent), "since_change": since, "epochs": self.params.epochs}


@register
class ReplayBurst(Policy):
    name = "replay_burst"
    params_model = ReplayBurstParams

    def ready(self, ctx: PolicyContext) -> str | None:
        return "no recent labeled events" if not ctx.recent else None

    def apply(self, ctx: PolicyContext) -> dict[str, Any]:
        recent = list(ctx.recent)
        rng = random.Random(ctx.seed + ctx.actions_taken)
        k = min(len(ctx.replay), round(len(recent) * self.params.replay_ratio))
        replayed = rng.sample(ctx.replay, k) if k else []
        pairs = recent + replayed
        tunable = fine_tunable(ctx.learner)
        for _ in range(self.params.epochs):
            rng.shuffle(pairs)
            if tunable is not None:
                tunable.fine_tune([e for e, _ in pairs], [y for _, y in pairs], batch_size=self.params.batch_size)
            else:
                _learn(ctx.learner, pairs)
        return {"recent": len(recent), "replayed": len(replayed), "epochs": self.params.epochs}


@register
class AdaBN(Policy):
    name = "adabn"
    params_model = AdaBNParams
    touches_backbone = True
    needs_labels = False

    def check(self, learner: Learner) -> None:
        holder = has_backbone(learner)
        if holder is None or not holder.backbone.norm_layers():
            kind = holder.backbone.cfg.kind if holder is not None else "identity"
            raise ConfigError(f"{self.where}: adabn re-estimates batch-norm statistics, and this model's backbone "
                              f"({kind}) has no batch-norm layers (adabn needs a torch backbone with BatchNorm "
                              "layers)")

    def ready(self, ctx: PolicyContext) -> str | None:
        n = len(ctx.inputs)
        return f"{n} recent inputs (< min_events {self.params.min_events})" if n < self.params.min_events else None

    def apply(self, ctx: PolicyContext) -> dict[str, Any]:
        holder = has_backbone(ctx.learner)
        assert holder is not None  # checked at start-up
        backbone = holder.backbone
        shift = backbone.renormalize(list(ctx.inputs))
        ctx.learner.prepare_batch([])  # embeddings cached before the change are stale
        return {"inputs": len(ctx.inputs), "layers": len(backbone.norm_layers()), "mean_shift": shift}


@register
class Adversarial(Policy):
    name = "adversarial"
    params_model = AdversarialParams
    needs_labels = False

    def check(self, learner: Learner) -> None:
        adaptable = adversarially_adaptable(learner)
        why = "it is not a torch head" if adaptable is None else adaptable.adversarial_unsupported()
        if why:
            raise ConfigError(f"{self.where}: adversarial adaptation trains the head's representation, and {why} "
                              "(use TorchMLP, or a torch head with model.params.unfreeze_top_k > 0)")

    def ready(self, ctx: PolicyContext) -> str | None:
        need = self.params.min_events
        if len(ctx.inputs) < need or len(ctx.replay) < need:
            return (f"{len(ctx.inputs)} recent inputs and {len(ctx.replay)} replayed labeled events "
                    f"(< min_events {need})")
        return None

    def apply(self, ctx: PolicyContext) -> dict[str, Any]:
        p = self.params
        adaptable = adversarially_adaptable(ctx.learner)
        assert adaptable is not None  # checked at start-up
        out = adaptable.adapt_adversarial(
            list(ctx.replay), list(ctx.inputs), epochs=p.epochs, lr=p.lr, weight=p.weight,
            batch_size=p.batch_size, seed=ctx.seed + ctx.actions_taken)
        ctx.learner.prepare_batch([])
        return out


def _learn(learner: Learner, pairs: list[tuple[Event, Label | float]]) -> None:
    for e, y in pairs:
        learner.learn_one(e, y)



def build_policy(name: str, params: Mapping[str, Any], where: str) -> Policy:
    if name not in POLICIES:
        raise ConfigError(f"{where}: unknown policy {name!r}; valid: {', '.join(POLICIES)}")
    return POLICIES[name](params, where)
