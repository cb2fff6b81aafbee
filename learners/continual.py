"""``Continual``: a pretrained backbone plus a classifier head, adapted by an Avalanche strategy.

Every event is predicted with the latest *completed* weights; labeled events gather into windows
(`training_worker`) that become the strategy's experiences, trained off the poll loop. After each
experience a copy of the trained network is published with one reference assignment: the model version
increments, and the next consumed batch predicts with it (a batch never mixes two versions).

The trainable network is the head, plus the backbone's top ``unfreeze_top_k`` layers for torch and
TorchScript ``nn.Sequential`` backbones; the frozen bottom runs once per consumed batch and its output is
what windows keep. Classification only. Classes grow with the stream (the output layer has room for
``max_classes``; only the classes the published network was trained on are predicted), or a configured
``model.classes`` fixes them and other labels are dead-lettered.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftline.core import Event, Label, Prediction, Task
from driftline.errors import ConfigError
from driftline.learners import continual_sync
from driftline.learners.backbones import Backbone
from driftline.learners.base import LearnerBase, check_fingerprint, check_label_type, check_state_header, class_column
from driftline.learners.capabilities import Capability
from driftline.learners.config import ModelSettings
from driftline.learners.embedding import BackboneParts, PreparedBatch
from driftline.learners.mergeable import Params
from driftline.learners.seeding import seeded
from driftline.learners.strategies import build_strategy, dump_strategy, load_strategy, parse_strategy
from driftline.learners.torch_head import RunningStandardizer, build_optimizer
from driftline.learners.training_worker import TrainingWorker, Window
from driftline.params import validate

STATE_KIND = "driftline.continual/1"


class ContinualParams(BaseModel):
    """``model.params`` of the ``Continual`` learner."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str = "Replay"  # Naive, Replay, EWC, LwF, AGEM, GDumb, SynapticIntelligence, MAS, ER_ACE, DER
    strategy_params: dict[str, Any] = Field(default_factory=dict)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    hidden: int = Field(256, ge=0, le=65_536)  # 0: a linear head
    dropout: float = Field(0.0, ge=0, lt=1)
    unfreeze_top_k: int = Field(0, ge=0)
    max_classes: int = Field(256, ge=2, le=100_000)
    window_events: int = Field(256, ge=1, le=1_000_000)  # an experience: this many labeled events ...
    window_seconds: float = Field(10.0, gt=0)  # ... or what arrived in this long
    max_pending_windows: int = Field(2, ge=1, le=1000)  # beyond this the consumer is paused (back-pressure)
    train_mb_size: int = Field(32, ge=1)
    train_epochs: int = Field(1, ge=1, le=1000)
    amp: bool = False  # CUDA only: bfloat16 autocast in training
    synchronous: bool = False  # train each window in the caller's thread (replay/pretrain set this)
    scale_warmup: int = Field(1000, ge=1)  # identity backbone: standardise with the first N labeled events


class ContinualLearner(BackboneParts, LearnerBase):
    """Backbone + head trained in windows by an Avalanche strategy in a worker thread."""

    capabilities = frozenset({Capability.HAS_BACKBONE, Capability.BACKGROUND_TRAINED, Capability.SELF_ADAPTING,
                              Capability.MERGEABLE})

    ladder_unsupported = ("the Continual learner adapts with its Avalanche strategy; drift detectors report and "
                          "audit, but the adaptation ladder does not apply to it (leave drift.policies empty)")

    def __init__(self, cfg: ModelSettings, backbone: Backbone) -> None:

        if cfg.task != "classification":
            raise ConfigError("model.name: Continual (Avalanche strategies) is for task 'classification'")
        self.cfg, self.name = cfg, cfg.name
        self.task: Task = "classification"
        self.params = p = validate(ContinualParams, cfg.params, where="model.params", name="Continual")
        self.strategy_spec, self.strategy_params = parse_strategy(p.strategy, p.strategy_params)
        self.backbone = backbone
        self.fingerprint = dict(backbone.fingerprint)
        self.device = backbone.device
        if p.unfreeze_top_k and backbone.cfg.kind not in ("torch", "torchvision"):
            raise ConfigError("model.params.unfreeze_top_k: the Continual learner can unfreeze layers of torch and "
                              f"torchvision (state_dict) backbones only, not {backbone.cfg.kind}: its strategy, "
                              "which holds those layers, is checkpointed with pickle, which TorchScript refuses")
        self.top = backbone.split(p.unfreeze_top_k)
        self._batch = PreparedBatch(self.top.prefix, backbone.check)
        self._fixed = tuple(cfg.classes) if cfg.classes else None
        self._classes: list[Label] = list(self._fixed or [])
        self._index: dict[Label, int] = {c: i for i, c in enumerate(self._classes)}
        n_out = len(self._fixed) if self._fixed else p.max_classes
        self._standardize = cfg.scale and backbone.cfg.kind == "identity"
        with seeded(cfg.seed):
            top_layers = self.top.modules if p.unfreeze_top_k else None
            from driftline.learners.continual_net import ContinualNet

            net = ContinualNet(top_layers, self._top_dim(), p.hidden, p.dropout, n_out, self._standardize)
            net = net.to(self.device)
        if top_layers is not None:
            for t in top_layers.parameters():
                t.requires_grad_(True)
        self.strategy = build_strategy(self.strategy_spec, self.strategy_params, model=net,
                                       optimizer=build_optimizer(p, net.parameters()),
                                       train_mb_size=p.train_mb_size, train_epochs=p.train_epochs, device=self.device)
        self._experiences = 0
        self._trained_classes = len(self._fixed) if self._fixed else 0
        # scaling statistics (identity backbone): over the first scale_warmup labeled events
        self._scale = RunningStandardizer(backbone.dim) if self._standardize else None
        self._version, self._updates = 1, 0
        # sync.mode average sets the version (the group's round + 1): windows trained no longer number it
        self._group_versioned = False
        self._sync_basis: tuple[int, Params] = (0, {})  # (windows trained, parameters) last read for a merge
        self._published = (self._serving_copy(net), self._trained_classes, self._version)
        self._pinned = self._published
        self.worker = TrainingWorker(self._train_window, window_events=p.window_events,
                                     window_seconds=p.window_seconds, max_pending=p.max_pending_windows,
                                     synchronous=p.synchronous)

    def _top_dim(self) -> int:
        """Width of the head's input: the backbone's embedding, or what its unfrozen layers output."""
        if not self.params.unfreeze_top_k:
            return self.backbone.dim
        import torch

        probe = self.backbone.probe_event()
        with torch.no_grad():
            h = self.top.forward(self.top.prefix([probe]))
        return int(h.reshape(1, -1).shape[1])

    # -- publication -----------------------------------------------------------------------------------
    @staticmethod
    def _serving_copy(net: Any) -> Any:
        served = copy.deepcopy(net)  # never trained: predictions run it under inference_mode
        served.eval()
        return served

    @property
    def version(self) -> int:
        """The version predictions use now: the pinned one of the current batch (the latest when synchronous)."""
        return (self._published if self.worker.synchronous else self._pinned)[2]

    @property
    def latest_version(self) -> int:
        """The newest published version (the next batch predicts with it)."""
        return self._published[2]

    def set_version(self, version: int) -> None:
        self._version, self._group_versioned = version, True
        net, n, _ = self._published
        self._published = self._pinned = (net, n, version)

    def set_synchronous(self, on: bool = True) -> None:
        """Train each window in the thread that seals it (replay, pretraining: results independent of timing)."""
        self.worker.synchronous = on

    def saturated(self) -> bool:
        return self.worker.saturated()

    def backlog(self) -> int:
        return self.worker.backlog()

    def drain(self, timeout: float | None = None) -> bool:
        return self.worker.drain(timeout)

    def hold_between_windows(self) -> bool:
        return self.worker.between_windows()

    def release_hold(self) -> None:
        self.worker.release()

    def close(self) -> None:
        self.worker.close()

    # -- test-then-train ---------------------------------------------------------------------------------
    def prepare_batch(self, xs: Sequence[Event]) -> None:
        self._pinned = self._published  # the whole batch predicts with one version
        self._batch.prepare(xs)

    def _serving(self, xs: Sequence[Event]) -> tuple[Any, int, int]:
        """The events of a prepared batch predict with the version pinned when it was prepared; anything
        else (and everything in synchronous mode, where training is part of learn_one) with the latest."""
        if self.worker.synchronous or not self._batch.holds(xs):
            self._pinned = self._published
        return self._pinned

    def _logits(self, xs: Sequence[Event]) -> tuple[Any, int]:
        import torch

        net, n_classes, _ = self._serving(xs)
        items = [self._batch.get(x) for x in xs]
        with torch.inference_mode():
            out = net(torch.stack(items).to(self.device))
        return out[:, :n_classes], n_classes

    def predict_one(self, x: Event) -> Prediction:
        return self.predict_many([x])[0]

    def predict_many(self, xs: Sequence[Event]) -> list[Prediction]:
        import torch

        out, n = self._logits(xs)
        if n == 0:
            return [Prediction(None, {}) for _ in xs]
        probs = torch.softmax(out.float(), dim=1).cpu()
        classes = self._classes[:n]
        return [Prediction(classes[int(row.argmax())], dict(zip(classes, row.tolist(), strict=True))) for row in probs]

    def embedding(self, x: Event) -> list[float]:
        """The frozen backbone's output for ``x`` (input drift detection)."""
        out: list[float] = self._batch.get(x).reshape(-1).float().cpu().tolist()
        return out

    def learn_one(self, x: Event, y: Label | float) -> None:
        target = self._target(y)
        item = self._batch.get(x).detach().to("cpu")
        if self._scale is not None and self._scale.n < self.params.scale_warmup:
            self._scale.learn(item)
        self.worker.add(item, target)
        self._updates += 1

    def _scale_stats(self) -> tuple[Any, Any] | None:
        """Mean and sample standard deviation (1 where a feature has not varied) for the network's input."""
        import torch

        sc = self._scale
        if sc is None or sc.n == 0:
            return None
        var = sc.m2 / max(sc.n - 1, 1)
        std = torch.where(var > 1e-12, var.sqrt(), torch.ones_like(var))
        return sc.mean.float(), std.float()

    def _target(self, y: Label | float) -> int:
        label = check_label_type(self.task, y)
        return class_column(label, self._index, self._classes, self._fixed, self.params.max_classes)  # type: ignore[arg-type]

    # -- the worker's side -------------------------------------------------------------------------------
    def _train_window(self, w: Window) -> None:
        import contextlib

        import torch
        from avalanche.benchmarks.scenarios.dataset_scenario import DatasetExperience

        from driftline.learners import avalanche_data

        net = self.strategy.model
        stats = self._scale_stats()
        if stats is not None:
            net.mean.copy_(stats[0].to(net.mean.device))
            net.std.copy_(stats[1].to(net.std.device))
        x = torch.stack(w.xs).float()
        y = torch.tensor(w.ys, dtype=torch.long)
        avalanche_data.install()
        exp = DatasetExperience(dataset=avalanche_data.window_dataset(x, y, w.ys), current_experience=self._experiences)
        cuda = self.device.type == "cuda"
        amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda and self.params.amp
               else contextlib.nullcontext())
        with amp, seeded(self.cfg.seed + self._experiences, self.device):
            self.strategy.train(exp, eval_streams=[], pin_memory=cuda, num_workers=0)
        self._publish(w)

    def _publish(self, w: Window) -> None:
        """After training on ``w``: a copy of the trained network becomes the served one."""
        self._experiences += 1
        self._trained_classes = max(self._trained_classes, max(w.ys) + 1)
        if not self._group_versioned:
            self._version += 1
        self._republish()

    def _republish(self) -> None:
        """A copy of the trained network becomes the served one (one assignment: the swap)."""
        self._published = (self._serving_copy(self.strategy.model), self._trained_classes, self._version)

    # -- Mergeable (sync.mode average; `learners.continual_sync`) ----------------------------------------
    @property
    def sync_kind(self) -> str:
        return continual_sync.sync_kind(self)

    def sync_params(self) -> Params:
        return continual_sync.sync_params(self)

    def load_sync_params(self, params: Params) -> None:
        continual_sync.load_sync_params(self, params)

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        import torch

        with self.worker.train_lock:  # waits for a window in training: a snapshot between experiences
            strategy = dump_strategy(self.strategy)
            pending = self.worker.pending()
            net, n_classes, version = self._published
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
            return {
                "kind": STATE_KIND, "task": self.task, "name": self.name, "fixed_classes": self._fixed,
                "classes": list(self._classes), "version": version, "updates": self._updates,
                "backbone": self.fingerprint, "unfreeze_top_k": self.params.unfreeze_top_k,
                "strategy_name": self.params.strategy, "strategy": strategy, "serving": buf.getvalue(),
                "trained_classes": n_classes, "experiences": self._experiences,
                "pending": [(torch.stack(w.xs).cpu(), list(w.ys)) for w in pending],
                "scale": None if self._scale is None or self._scale.n == 0 else
                (self._scale.n, self._scale.mean.clone(), self._scale.m2.clone()),
                "norm": self._norm_state(),
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        import torch

        check_state_header(state, STATE_KIND, "Continual learner", self.task, self.name)
        if state["fixed_classes"] != self._fixed:
            raise ValueError(f"state has classes {state['fixed_classes']!r}, config has {self._fixed!r}")
        for key, mine in (("unfreeze_top_k", self.params.unfreeze_top_k), ("strategy_name", self.params.strategy)):
            if state[key] != mine:
                raise ValueError(f"state was trained with {key}={state[key]!r}, config has {mine!r}")
        check_fingerprint(state.get("backbone"), self.fingerprint)
        with self.worker.train_lock:
            try:
                strategy = load_strategy(state["strategy"], self.device)
                served = self._serving_copy(strategy.model)
                served.load_state_dict(torch.load(io.BytesIO(state["serving"]), map_location=self.device))
            except (RuntimeError, ValueError, KeyError) as exc:
                raise ValueError(f"state does not fit this learner ({exc})") from None
            self.strategy = strategy
            self._classes = list(state["classes"])
            self._index = {c: i for i, c in enumerate(self._classes)}
            self._version, self._updates = int(state["version"]), int(state["updates"])
            self._trained_classes, self._experiences = int(state["trained_classes"]), int(state["experiences"])
            scale = state.get("scale")
            if scale is not None and self._scale is not None:
                self._scale.load_state_dict({"n": scale[0], "mean": scale[1], "m2": scale[2]})
            self._published = self._pinned = (served, self._trained_classes, self._version)
            self._load_norm_state(state)
            self.worker.restore([Window(list(x.unbind(0)), list(ys)) for x, ys in state["pending"]])

    def spawn(self, state: Mapping[str, Any], *, detach: bool = False) -> ContinualLearner:
        raise NotImplementedError(self.ladder_unsupported)
