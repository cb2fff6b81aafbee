"""Avalanche strategies by name, with validated parameters, and their state as bytes.

`build_strategy` makes the strategy a config names (``model.params.strategy`` and ``strategy_params``)
around our model and optimizer, silent (no Avalanche loggers) and without periodic evaluation: the
stream itself is the evaluation (test-then-train). `dump_strategy` / `load_strategy` turn the whole
strategy — model, optimizer, and what its plugins keep (replay buffer, EWC importances, the LwF teacher,
A-GEM's memory, ...) — into bytes and back, mapping tensors to the device at hand.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftline.errors import ConfigError
from driftline.params import validate


class _Params(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoParams(_Params):
    pass


class MemoryParams(_Params):
    mem_size: int = Field(500, ge=1, le=10_000_000)  # examples kept over the whole stream


class EWCParams(_Params):
    ewc_lambda: float = Field(10.0, ge=0)
    mode: Literal["separate", "online"] = "online"  # online: one running importance (bounded memory)
    decay_factor: float | None = Field(0.9, gt=0, le=1)  # online mode only

    def kwargs(self) -> dict[str, Any]:
        d = self.model_dump()
        if self.mode == "separate":
            d["decay_factor"] = None
        return d


class LwFParams(_Params):
    alpha: float = Field(1.0, ge=0)
    temperature: float = Field(2.0, gt=0)


class AGEMParams(_Params):
    patterns_per_exp: int = Field(64, ge=1)  # examples kept from each experience (window)
    sample_size: int = Field(64, ge=1)  # memory examples per reference gradient


class SIParams(_Params):
    si_lambda: float = Field(1.0, ge=0)


class MASParams(_Params):
    lambda_reg: float = Field(1.0, ge=0)
    alpha: float = Field(0.5, ge=0, le=1)


class ReplayMemoryParams(_Params):
    mem_size: int = Field(500, ge=1, le=10_000_000)
    batch_size_mem: int = Field(32, ge=1)


class DERParams(ReplayMemoryParams):
    alpha: float = Field(0.1, ge=0)
    beta: float = Field(0.5, ge=0)


@dataclass(frozen=True)
class StrategySpec:
    path: str  # avalanche.training attribute
    params: type[_Params]
    doc: str

    def kwargs(self, p: _Params) -> dict[str, Any]:
        k = getattr(p, "kwargs", None)
        return k() if callable(k) else p.model_dump()


STRATEGIES: dict[str, StrategySpec] = {
    "Naive": StrategySpec("Naive", NoParams, "plain fine-tuning on each window (forgets: the baseline)"),
    "Replay": StrategySpec("Replay", MemoryParams, "experience replay from a class-balanced reservoir"),
    "EWC": StrategySpec("EWC", EWCParams, "elastic weight consolidation (Fisher-weighted penalty)"),
    "LwF": StrategySpec("LwF", LwFParams, "learning without forgetting (distillation from the previous model)"),
    "AGEM": StrategySpec("AGEM", AGEMParams, "averaged gradient episodic memory (projected gradients)"),
    "GDumb": StrategySpec("GDumb", MemoryParams, "greedy class-balanced memory, retrained from it each window"),
    "SynapticIntelligence": StrategySpec("SynapticIntelligence", SIParams, "path-integral importance penalty"),
    "MAS": StrategySpec("MAS", MASParams, "memory-aware synapses (output-sensitivity importance)"),
    "ER_ACE": StrategySpec("ER_ACE", ReplayMemoryParams, "experience replay with asymmetric cross-entropy"),
    "DER": StrategySpec("DER", DERParams, "dark experience replay (logit replay)"),
}


def parse_strategy(name: str, params: Mapping[str, Any]) -> tuple[StrategySpec, _Params]:
    spec = STRATEGIES.get(name)
    if spec is None:
        raise ConfigError(f"model.params.strategy: unknown Avalanche strategy {name!r}; valid: "
                          f"{', '.join(STRATEGIES)}")
    return spec, validate(spec.params, params, where="model.params.strategy_params", name=name)


def _silent_evaluator() -> Any:
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no loggers specified": silence is the point
        return EvaluationPlugin(loggers=[])


def build_strategy(spec: StrategySpec, params: _Params, *, model: Any, optimizer: Any, train_mb_size: int,
                   train_epochs: int, device: Any) -> Any:
    import avalanche.training as training
    import torch

    from driftline.learners.avalanche_data import PinnedBatches

    cls = getattr(training, spec.path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cls(model=model, optimizer=optimizer, criterion=torch.nn.CrossEntropyLoss(),
                   train_mb_size=train_mb_size, train_epochs=train_epochs, eval_mb_size=train_mb_size,
                   device=device, evaluator=_silent_evaluator(), eval_every=-1, plugins=[PinnedBatches()],
                   **spec.kwargs(params))


def _without_unpicklables(strategy: Any) -> Callable[[], None]:
    """Detach what pickle cannot take (the evaluator, A-GEM's live iterator); returns the undo."""
    evaluator, plugins = strategy.evaluator, strategy.plugins
    strategy.evaluator = None
    strategy.plugins = [p for p in plugins if p is not evaluator]
    iters = []
    for p in strategy.plugins:
        if hasattr(p, "buffer_dliter"):
            iters.append((p, p.buffer_dliter))
            p.buffer_dliter = iter([])

    def undo() -> None:
        strategy.evaluator, strategy.plugins = evaluator, plugins
        for p, it in iters:
            p.buffer_dliter = it
    return undo


def dump_strategy(strategy: Any) -> bytes:
    """The strategy with its model, optimizer and plugin state, as bytes (call between experiences)."""
    import torch

    undo = _without_unpicklables(strategy)
    try:
        buf = io.BytesIO()
        torch.save(strategy, buf)
        return buf.getvalue()
    finally:
        undo()


def load_strategy(data: bytes, device: Any) -> Any:
    import torch

    from driftline.learners.avalanche_data import PinnedBatches

    strategy = torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    strategy.device = device
    if not any(isinstance(p, PinnedBatches) for p in strategy.plugins):  # saved before it existed
        strategy.plugins.append(PinnedBatches())
    strategy.evaluator = _silent_evaluator()
    strategy.plugins.append(strategy.evaluator)
    for p in strategy.plugins:
        if getattr(p, "buffer_dataloader", None) is not None:
            p.buffer_dliter = iter(p.buffer_dataloader)
    return strategy
