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
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from driftline.core import Label
from driftline.learners.base import class_column
from driftline.learners.mergeable import MEAN, MOMENTS, Entry, Params, mean_entry, positions

if TYPE_CHECKING:
    from driftline.learners.torch_head import RunningStandardizer, TorchHeadLearner


def _vector(values: Any) -> Entry:
    """A vector (a sequence or a 1-d array) as a MEAN entry, keyed by position: the array as it is, no dict."""
    arr = np.array(values, dtype=np.float64).reshape(-1)
    return Entry(MEAN, positions(len(arr)), arr)


def _values(entry: Entry, n: int) -> npt.NDArray[np.float64]:
    """The first ``n`` positions of a `_vector` entry (0 where it has none)."""
    if entry.keys == positions(n):  # every position: the array itself
        return entry.values
    values = entry.as_dict()
    return np.array([values.get(k, 0.0) for k in positions(n)], dtype=np.float64)


def _flat(prefix: str, tensors: dict[str, Any]) -> Params:
    out: Params = {}
    for name, t in tensors.items():
        if not t.is_floating_point():
            continue
        out[f"{prefix}/{name}"] = _vector(t.detach().double().cpu().reshape(-1).numpy())
    return out


def _load_flat(prefix: str, module: Any, params: Params) -> None:
    import torch

    state = module.state_dict()
    for name, t in state.items():
        e = params.get(f"{prefix}/{name}")
        if e is None or not t.is_floating_point():
            continue
        flat = torch.from_numpy(np.array(_values(e, t.numel())))
        state[name] = flat.reshape(t.shape).to(dtype=t.dtype)
    module.load_state_dict(state)


def output_layer(head: Any) -> tuple[str, Any]:
    """(state_dict prefix, module) of a head's last Linear layer (the head: a Linear or a Sequential)."""
    from torch import nn

    if isinstance(head, nn.Linear):
        return "", head
    return f"{len(head) - 1}.", head[-1]


def head_params(head: Any, top: Any, *, per_class: bool) -> Params:
    """The head's and the unfrozen top layers' floating-point tensors (per class: the output layer's apart)."""
    prefix, _ = output_layer(head)
    tensors = {k: v for k, v in head.state_dict().items()
               if not (per_class and k in (f"{prefix}weight", f"{prefix}bias"))}
    return {**_flat("head", tensors), **({} if top is None else _flat("top", top.state_dict()))}


def load_head_params(head: Any, top: Any, params: Params) -> None:
    _load_flat("head", head, params)
    if top is not None:
        _load_flat("top", top, params)


def class_rows(out_layer: Any, classes: Sequence[Label], index: Mapping[Label, int]) -> Params:
    """The output layer's row (weights and bias) of every class, keyed by the class label."""
    w = out_layer.weight.detach().double().cpu()
    b = out_layer.bias.detach().double().cpu()
    params: Params = {}
    for label in classes:
        col = index[label]
        key = json.dumps(label)
        params[f"out.w/{key}"] = _vector(w[col].numpy())
        params[f"out.b/{key}"] = mean_entry({"": float(b[col])})
    return params


def load_class_rows(out_layer: Any, params: Params, column: Callable[[Label], int]) -> list[int]:
    """Each class's row into its column here (``column``: this member's column of a label, given one if it is
    new here); the columns loaded."""
    import torch

    rows: dict[Label, tuple[Entry, Entry | None]] = {}
    for name, e in params.items():
        head, _, key = name.partition("/")
        if head == "out.w":
            rows[json.loads(key)] = (e, params.get(f"out.b/{key}"))
    cols = []
    with torch.no_grad():
        for label, (we, be) in sorted(rows.items(), key=lambda kv: json.dumps(kv[0])):
            col = column(label)
            out_layer.weight[col] = torch.from_numpy(np.array(_values(we, out_layer.weight.shape[1]))).to(
                dtype=out_layer.weight.dtype)
            if be is not None and len(be.values):
                out_layer.bias[col] = float(be.values[0])
            cols.append(col)
    return cols


def scaler_params(scaler: RunningStandardizer | None) -> Params:
    """An online standardiser's count, mean and variance per dimension (MOMENTS: merged exactly)."""
    if scaler is None or scaler.n == 0:
        return {}
    mean = scaler.mean.double().numpy()
    rows = np.stack([np.full_like(mean, float(scaler.n)), mean, (scaler.m2 / scaler.n).double().numpy()], axis=1)
    return {"scaler": Entry(MOMENTS, positions(len(mean)), rows)}


def load_scaler(scaler: RunningStandardizer | None, params: Params) -> None:
    import torch

    entry = params.get("scaler")
    if scaler is None or entry is None or not len(entry.keys):
        return
    if entry.keys != positions(len(entry.keys)):
        raise ValueError("the scaler's statistics are not keyed by position: not a torch head's")
    rows = np.array(entry.values)  # (count, mean, variance) per position, in position order
    n = float(rows[0, 0])
    scaler.n = round(n)
    scaler.mean = torch.from_numpy(rows[:, 1].copy())
    scaler.m2 = torch.from_numpy(rows[:, 2] * n)


# -- the torch head (TorchLinear, TorchMLP) -----------------------------------------------------------------
def sync_kind(self: TorchHeadLearner) -> str:
    return json.dumps({"state": "driftline.torch-head/1", "task": self.task, "name": self.name,
                       "classes": list(self._fixed) if self._fixed else None, "hidden": self.params.hidden,
                       "max_classes": self.params.max_classes, "unfreeze_top_k": self.params.unfreeze_top_k,
                       "backbone": self.fingerprint, "scale": self._scaler is not None},
                      sort_keys=True, default=str)


def sync_params(self: TorchHeadLearner) -> Params:
    per_class = self.task == "classification"
    params = head_params(self.head, self.top.modules, per_class=per_class)
    if per_class:
        params.update(class_rows(output_layer(self.head)[1], self._classes, self._index))
    params.update(scaler_params(self._scaler))
    return params


def load_sync_params(self: TorchHeadLearner, params: Params) -> None:
    load_head_params(self.head, self.top.modules, params)
    if self.task == "classification":
        load_class_rows(output_layer(self.head)[1], params, lambda label: class_column(
            label, self._index, self._classes, self._fixed, self.params.max_classes))
    load_scaler(self._scaler, params)
    self._adopted = True
