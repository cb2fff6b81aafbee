"""Torch heads as mergeable learners (``sync.mode: average``): their tensors as data (`learners.mergeable`).

What is merged: every floating-point tensor of the head (and of the unfrozen top layers, with
``unfreeze_top_k``) as MEAN entries, averaged; the output layer's rows per class label (members discover classes
in different orders, so column i is not the same class everywhere: a class's row is averaged over the members
that have it, and a member that has not seen a class takes it from the group); the online standardiser's
count/mean/variance per dimension as MOMENTS, combined exactly. What stays each member's own: the optimizer's
state (Adam's moments, SGD's momentum: they describe the member's own recent gradients, and averaging them
across members has no meaning for the merged weights), integer buffers (batch-norm's step counter).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from driftline.core import Label
from driftline.learners.base import class_column
from driftline.learners.mergeable import Entry, Params, mean_entry, moments_entry

if TYPE_CHECKING:
    from driftline.learners.torch_head import TorchHeadLearner


def _key(i: int) -> str:
    """Position ``i`` as an entry key (zero-padded: keys sort in position order)."""
    return f"{i:09d}"


def _vector(values: list[float]) -> Entry:
    """A vector as a MEAN entry, keyed by position."""
    return mean_entry({_key(i): v for i, v in enumerate(values)})


def _values(entry: Entry, n: int) -> list[float]:
    """The first ``n`` positions of a `_vector` entry (0 where it has none)."""
    values = entry.as_dict()
    return [values.get(_key(i), 0.0) for i in range(n)]


def _flat(prefix: str, tensors: dict[str, Any]) -> Params:
    out: Params = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        out[f"{prefix}/{name}"] = _vector(t.detach().double().cpu().reshape(-1).tolist())
    return out


def _load_flat(prefix: str, module: Any, params: Params) -> None:
    import torch

    state = module.state_dict()
    for name, t in state.items():
        e = params.get(f"{prefix}/{name}")
        if e is None or not t.is_floating_point():
            continue
        flat = torch.tensor(_values(e, t.numel()), dtype=torch.float64)
        state[name] = flat.reshape(t.shape).to(dtype=t.dtype)
    module.load_state_dict(state)


def output_layer(self: TorchHeadLearner) -> tuple[str, Any]:
    """(state_dict prefix, module) of the head's last Linear layer."""
    from torch import nn

    head: Any = self.head
    if isinstance(head, nn.Linear):
        return "", head
    return f"{len(head) - 1}.", head[-1]


def sync_kind(self: TorchHeadLearner) -> str:
    return json.dumps({"state": "driftline.torch-head/1", "task": self.task, "name": self.name,
                       "classes": list(self._fixed) if self._fixed else None, "hidden": self.params.hidden,
                       "max_classes": self.params.max_classes, "unfreeze_top_k": self.params.unfreeze_top_k,
                       "backbone": self.fingerprint, "scale": self._scaler is not None},
                      sort_keys=True, default=str)


def sync_params(self: TorchHeadLearner) -> Params:
    prefix, out_layer = output_layer(self)
    per_class = self.task == "classification"
    head = {k: v for k, v in self.head.state_dict().items()
            if not (per_class and k in (f"{prefix}weight", f"{prefix}bias"))}
    params = {**_flat("head", head), **_flat("top", self.top.modules.state_dict())}
    if per_class:
        w = out_layer.weight.detach().double().cpu()
        b = out_layer.bias.detach().double().cpu()
        for label in self._classes:
            col = self._index[label]
            key = json.dumps(label)
            params[f"out.w/{key}"] = _vector(w[col].tolist())
            params[f"out.b/{key}"] = mean_entry({"": float(b[col])})
    if self._scaler is not None and self._scaler.n > 0:
        s = self._scaler
        var = (s.m2 / s.n).tolist()
        params["scaler"] = moments_entry({_key(i): (float(s.n), float(m), float(v))
                                          for i, (m, v) in enumerate(zip(s.mean.tolist(), var, strict=True))})
    return params


def load_sync_params(self: TorchHeadLearner, params: Params) -> None:
    import torch

    _, out_layer = output_layer(self)
    _load_flat("head", self.head, params)
    _load_flat("top", self.top.modules, params)
    if self.task == "classification":
        rows: dict[Label, tuple[Entry, Entry | None]] = {}
        for name, e in params.items():
            head, _, key = name.partition("/")
            if head == "out.w":
                rows[json.loads(key)] = (e, params.get(f"out.b/{key}"))
        with torch.no_grad():
            for label, (we, be) in sorted(rows.items(), key=lambda kv: json.dumps(kv[0])):
                col = class_column(label, self._index, self._classes, self._fixed, self.params.max_classes)
                out_layer.weight[col] = torch.tensor(_values(we, out_layer.weight.shape[1]),
                                                     dtype=out_layer.weight.dtype)
                if be is not None and len(be.values):
                    out_layer.bias[col] = float(be.values[0])
    scaler = params.get("scaler")
    if self._scaler is not None and scaler is not None and len(scaler.keys):
        rows_ = scaler.rows()
        ordered = [rows_[_key(i)] for i in range(len(rows_))]
        n = ordered[0][0]
        self._scaler.n = round(n)
        self._scaler.mean = torch.tensor([r[1] for r in ordered], dtype=torch.float64)
        self._scaler.m2 = torch.tensor([r[2] * n for r in ordered], dtype=torch.float64)
    self._adopted = True
