"""Torch heads trained online on a backbone: ``TorchLinear`` and ``TorchMLP``.

Feature-extraction mode (``unfreeze_top_k: 0``): the backbone is frozen and runs once per consumed
batch; the head takes one optimizer step per labeled event. Fine-tuning mode (``unfreeze_top_k:
k``): the backbone's top ``k`` layers train too, at ``backbone_lr``; the frozen bottom still runs
once per batch and its output is cached, so each event is predicted with the weights every earlier
label produced (test-then-train holds exactly in both modes).

Classification heads grow with the label set: the output layer has room for ``max_classes``
classes and only the columns of classes seen so far take part, so a new class needs no new
optimizer. A configured ``classes`` list fixes the set instead (others are dead-lettered).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from driftline.core import Event, Label, Prediction, Task
from driftline.learners import torch_sync
from driftline.learners.backbones import Backbone
from driftline.learners.base import LearnerBase, check_fingerprint, check_label_type, check_state_header, class_column
from driftline.learners.capabilities import Capability
from driftline.learners.config import ModelSettings
from driftline.learners.embedding import BackboneParts, PreparedBatch
from driftline.learners.mergeable import Params
from driftline.learners.seeding import seeded
from driftline.params import validate

STATE_KIND = "driftline.torch-head/1"


class TorchHeadParams(BaseModel):
    """``model.params`` of a torch head."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd only
    weight_decay: float = Field(0.0, ge=0)
    hidden: int = Field(256, ge=1, le=65_536)  # TorchMLP only
    dropout: float = Field(0.0, ge=0, lt=1)  # TorchMLP only
    unfreeze_top_k: int = Field(0, ge=0)  # backbone layers trained with the head (fine-tuning mode)
    backbone_lr: float = Field(1e-5, gt=0, le=10)  # learning rate of the unfrozen backbone layers
    max_classes: int = Field(256, ge=2, le=100_000)  # room in the output layer when classes are not fixed


def parse_params(name: str, params: Mapping[str, Any]) -> TorchHeadParams:
    return validate(TorchHeadParams, params, where="model.params", name=name)


class TorchHeadLearner(BackboneParts, LearnerBase):
    """A torch head (optionally with the backbone's top layers) learning one event at a time; its tensors are
    data the members of a group average (`learners.torch_sync`)."""

    capabilities = frozenset({Capability.HAS_BACKBONE, Capability.FINE_TUNABLE, Capability.ADVERSARIAL,
                              Capability.MERGEABLE})

    mlp = False

    def __init__(self, cfg: ModelSettings, backbone: Backbone) -> None:
        from torch import nn

        self.cfg = cfg
        self.task: Task = cfg.task
        self.name = cfg.name
        self.params = p = parse_params(cfg.name, cfg.params)
        self.backbone = backbone
        self.fingerprint = dict(backbone.fingerprint)
        self.device = backbone.device
        self.top = backbone.split(p.unfreeze_top_k)
        self._batch = PreparedBatch(self.top.prefix, backbone.check)
        self._fixed = tuple(cfg.classes) if cfg.classes else None
        self._classes: list[Label] = list(self._fixed or [])
        self._index: dict[Label, int] = {c: i for i, c in enumerate(self._classes)}
        n_out = 1 if self.task == "regression" else len(self._fixed) if self._fixed else p.max_classes
        with seeded(cfg.seed):
            dim = backbone.dim
            if self.mlp:
                head: nn.Module = nn.Sequential(nn.Linear(dim, p.hidden), nn.ReLU(), nn.Dropout(p.dropout),
                                                nn.Linear(p.hidden, n_out))
            else:
                head = nn.Linear(dim, n_out)
        self.head = head.to(self.device)
        top_params = list(self.top.modules.parameters())
        for t in top_params:
            t.requires_grad_(True)
        groups: list[dict[str, Any]] = [{"params": list(self.head.parameters()), "lr": p.lr}]
        if top_params:
            groups.append({"params": top_params, "lr": p.backbone_lr})
        self.optimizer = build_optimizer(p, groups)
        # Raw features (identity backbone) are standardised online, as River heads do with model.scale:
        # the statistics learn each event before it is transformed for learning (River's pipeline order).
        self._scaler = RunningStandardizer(backbone.dim) if cfg.scale and backbone.cfg.kind == "identity" else None
        self._version = 1
        self._updates = 0
        self._adopted = False  # holds a group model (sync.mode average): predicts before learning anything

    # -- Mergeable (sync.mode average; `learners.torch_sync`) ----------------------------------------
    @property
    def sync_kind(self) -> str:
        return torch_sync.sync_kind(self)

    def sync_params(self) -> Params:
        return torch_sync.sync_params(self)

    def load_sync_params(self, params: Params) -> None:
        torch_sync.load_sync_params(self, params)

    # -- test-then-train ------------------------------------------------------------------------
    def prepare_batch(self, xs: Sequence[Event]) -> None:
        self._batch.prepare(xs)

    def _outputs(self, x: Event, *, learn: bool = False) -> Any:
        z = self.top.forward([self._batch.get(x)])
        if self._scaler is not None:
            z = self._scaler.learn_transform(z) if learn else self._scaler.transform(z)
        out = self.head(z)
        if self.task == "classification":
            out = out[:, : len(self._classes)]
        return out

    def embedding(self, x: Event) -> list[float]:
        """The backbone's embedding of ``x`` (its top layers included), for input drift detection."""
        import torch

        with torch.inference_mode():
            z = self.top.forward([self._batch.get(x)])
        out: list[float] = z[0].float().cpu().tolist()
        return out

    def predict_one(self, x: Event) -> Prediction:
        import torch

        self.head.eval()
        self.top.modules.eval()
        with torch.inference_mode():
            out = self._outputs(x)
        if self.task == "regression":
            return Prediction(float(out[0, 0]) if self._updates or self._adopted else None)
        if not self._classes:
            return Prediction(None, {})
        probs = torch.softmax(out[0], dim=0).tolist()
        proba = dict(zip(self._classes, probs, strict=True))
        return Prediction(self._classes[int(out[0].argmax())], proba)

    def learn_one(self, x: Event, y: Label | float) -> None:
        import torch
        from torch.nn import functional

        target = self._target(y)
        self.head.train()
        self.top.modules.train()
        out = self._outputs(x, learn=True)
        if self.task == "regression":
            loss = functional.mse_loss(out[:, 0], torch.tensor([target], dtype=out.dtype, device=self.device))
        else:
            loss = functional.cross_entropy(out, torch.tensor([target], device=self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        self._updates += 1



    # -- adaptation -----------------------------------------------------------------------------
    def _usable(self, pairs: Sequence[tuple[Event, Any]]) -> tuple[list[Event], list[Any]]:
        """The events the backbone can read, with their targets (labels it cannot learn are left out)."""
        events, targets = [], []
        for e, y in pairs:
            try:
                self.backbone.check(e)
                t = self._target(y) if y is not None else None
            except ValueError:  # EventRejected: unreadable input or unlearnable label
                continue
            events.append(e)
            targets.append(t)
        return events, targets

    def _loss(self, out: Any, targets: Sequence[Any]) -> Any:
        import torch
        from torch.nn import functional

        if self.task == "regression":
            return functional.mse_loss(out[:, 0], torch.tensor(list(targets), dtype=out.dtype, device=self.device))
        return functional.cross_entropy(out[:, : len(self._classes)], torch.tensor(list(targets), device=self.device))

    def _scaled(self, z: Any) -> Any:
        return self._scaler.transform(z) if self._scaler is not None else z

    def fine_tune(self, xs: Sequence[Event], ys: Sequence[Label | float], *, batch_size: int = 32) -> None:
        """One pass of mini-batch steps (head and unfrozen backbone layers) over ``xs`` in the given order."""
        events, targets = self._usable(list(zip(xs, ys, strict=True)))
        items = self.top.prefix(events) if events else []
        self.head.train()
        self.top.modules.train()
        for i in range(0, len(items), batch_size):
            out = self.head(self._scaled(self.top.forward(items[i: i + batch_size])))
            loss = self._loss(out, targets[i: i + batch_size])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._updates += len(items[i: i + batch_size])

    def adversarial_unsupported(self) -> str | None:
        if self.mlp or self.params.unfreeze_top_k > 0:
            return None
        return "TorchLinear on a frozen backbone has no trainable representation"

    def _represent(self, items: Sequence[Any]) -> Any:
        z = self._scaled(self.top.forward(items))
        return self.head[:3](z) if self.mlp else z  # type: ignore[index]

    def _classifier(self) -> Any:
        return self.head[3] if self.mlp else self.head  # type: ignore[index]

    def adapt_adversarial(self, source: Sequence[tuple[Event, Label | float]], target: Sequence[Event], *,
                          epochs: int, lr: float, weight: float, batch_size: int, seed: int) -> dict[str, Any]:
        """Domain-adversarial training (DANN): the representation learns to classify the labeled
        ``source`` events while a domain discriminator, behind a gradient-reversal layer, fails to tell
        them from the unlabeled ``target`` events. Returns the discriminator's accuracy before and after
        (0.5: the domains look alike to it)."""
        import torch
        from torch import nn
        from torch.nn import functional

        s_events, s_targets = self._usable(source)
        t_events, _ = self._usable([(e, None) for e in target])
        if not s_events or not t_events:
            return {"source": len(s_events), "target": len(t_events), "steps": 0}
        s_items, t_items = self.top.prefix(s_events), self.top.prefix(t_events)
        gen = torch.Generator().manual_seed(seed)
        with seeded(seed):
            fdim = self.params.hidden if self.mlp else self.backbone.dim
            disc = nn.Sequential(nn.Linear(fdim, 64), nn.ReLU(), nn.Linear(64, 1)).to(self.device)
        params = [*self.head.parameters(), *self.top.modules.parameters(), *disc.parameters()]
        opt = torch.optim.Adam(params, lr=lr)
        half = max(batch_size // 2, 1)

        def domain_accuracy() -> float:
            with torch.no_grad():
                fs, ft = self._represent(s_items), self._represent(t_items)
                pred = disc(torch.cat([fs, ft])).squeeze(1) > 0
                truth = torch.cat([torch.zeros(len(fs)), torch.ones(len(ft))]).bool().to(pred.device)
                return float((pred == truth).float().mean())

        self.head.train()
        self.top.modules.train()
        steps = max(max(len(s_items), len(t_items)) // half, 1)
        acc_before = None
        for epoch in range(epochs):
            ps, pt = torch.randperm(len(s_items), generator=gen), torch.randperm(len(t_items), generator=gen)
            for step in range(steps):
                si = [int(ps[(step * half + j) % len(ps)]) for j in range(half)]
                ti = [int(pt[(step * half + j) % len(pt)]) for j in range(half)]
                fs = self._represent([s_items[i] for i in si])
                ft = self._represent([t_items[i] for i in ti])
                loss_c = self._loss(self._classifier()(fs), [s_targets[i] for i in si])
                logits = disc(_reverse(torch.cat([fs, ft]), weight)).squeeze(1)
                truth = torch.cat([torch.zeros(len(fs)), torch.ones(len(ft))]).to(logits.device)
                loss = loss_c + functional.binary_cross_entropy_with_logits(logits, truth)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if epoch == 0:
                acc_before = domain_accuracy()
        return {"source": len(s_items), "target": len(t_items), "epochs": epochs, "steps": steps * epochs,
                "domain_accuracy_first_epoch": acc_before, "domain_accuracy": domain_accuracy()}

    def _target(self, y: Label | float) -> Any:
        checked = check_label_type(self.task, y)
        if isinstance(checked, float):  # regression
            return checked
        return class_column(checked, self._index, self._classes, self._fixed, self.params.max_classes)

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        def cpu(sd: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v.detach().cpu().clone() for k, v in sd.items()}

        return {
            "kind": STATE_KIND, "task": self.task, "name": self.name, "fixed_classes": self._fixed,
            "classes": list(self._classes), "version": self._version, "updates": self._updates,
            "backbone": self.fingerprint, "unfreeze_top_k": self.params.unfreeze_top_k,
            "head": cpu(self.head.state_dict()), "top": cpu(self.top.modules.state_dict()),
            "optimizer": _cpu_optimizer_state(self.optimizer.state_dict()),
            "scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "norm": self._norm_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_header(state, STATE_KIND, "torch head", self.task, self.name)
        if state["fixed_classes"] != self._fixed:
            raise ValueError(f"state has classes {state['fixed_classes']!r}, config has {self._fixed!r}")
        if state["unfreeze_top_k"] != self.params.unfreeze_top_k:
            raise ValueError(f"state was trained with unfreeze_top_k={state['unfreeze_top_k']}, "
                             f"config has {self.params.unfreeze_top_k}")
        check_fingerprint(state.get("backbone"), self.fingerprint)
        try:
            self.head.load_state_dict(state["head"])
            self.top.modules.load_state_dict(state["top"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"state does not fit this head ({exc})") from None
        if self._scaler is not None:
            if state.get("scaler") is None:
                raise ValueError("state was learned without feature scaling; config has model.scale: true")
            self._scaler.load_state_dict(state["scaler"])
        self._load_norm_state(state)
        self._classes = list(state["classes"])
        self._index = {c: i for i, c in enumerate(self._classes)}
        self._version = int(state["version"])
        self._updates = int(state["updates"])


def build_optimizer(p: Any, params: Any) -> Any:
    """The torch optimizer ``p.optimizer`` (adam, adamw, sgd) over ``params`` (tensors or groups) with ``p.lr``,
    ``p.weight_decay`` and, for sgd, ``p.momentum``."""
    import torch

    if p.optimizer == "sgd":
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    cls = torch.optim.Adam if p.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=p.lr, weight_decay=p.weight_decay)


class RunningStandardizer:
    """Online mean/variance (Welford) standardisation of a feature vector; zero variance maps to 0."""

    def __init__(self, dim: int) -> None:
        import torch

        self.n = 0
        self.mean = torch.zeros(dim, dtype=torch.float64)
        self.m2 = torch.zeros(dim, dtype=torch.float64)

    def transform(self, z: Any) -> Any:
        import torch

        if self.n == 0:
            return z
        std = torch.sqrt(self.m2 / self.n)
        scaled = torch.where(std > 0, (z.double().cpu() - self.mean) / std.clamp_min(1e-300), 0.0)
        return scaled.to(dtype=z.dtype, device=z.device)

    def learn(self, z: Any) -> None:
        x = z.detach().double().cpu().reshape(-1)
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    def learn_transform(self, z: Any) -> Any:
        self.learn(z)
        return self.transform(z)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean.clone(), "m2": self.m2.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.n, self.mean, self.m2 = int(state["n"]), state["mean"].clone(), state["m2"].clone()


_REVERSE: Any = None


def _reverse(x: Any, weight: float) -> Any:
    """Gradient reversal: the identity forward, the gradient times ``-weight`` backward."""
    global _REVERSE
    if _REVERSE is None:
        import torch

        class Reverse(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: Any, w: float) -> Any:
                ctx.w = w
                return x.view_as(x)

            @staticmethod
            def backward(ctx: Any, grad: Any) -> Any:
                return -ctx.w * grad, None

        _REVERSE = Reverse
    return _REVERSE.apply(x, weight)


def _cpu_optimizer_state(sd: dict[str, Any]) -> dict[str, Any]:
    import torch

    def conv(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().clone()
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(sd)  # type: ignore[no-any-return]


class TorchLinear(TorchHeadLearner):
    """A linear (softmax / linear regression) head."""


class TorchMLP(TorchHeadLearner):
    """One hidden layer (ReLU, optional dropout) before the output layer."""

    mlp = True
