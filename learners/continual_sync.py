"""The Continual learner as a mergeable learner (``sync.mode: average``): its network's tensors as data
(`learners.mergeable`, with the torch heads' helpers in `learners.torch_sync`).

What is merged: every floating-point tensor of the trained network's head and unfrozen top layers (averaged),
the output layer's rows per class label (members discover classes in different orders), and the input
standardiser's statistics (identity backbone; combined exactly). What stays each member's own: the optimizer's
state (Adam's moments, SGD's momentum), and everything the Avalanche strategy keeps about the member's own
experiences: Replay's and GDumb's buffers (examples of the member's own partitions: data never leaves a member),
EWC's, SI's and MAS's importances and anchor weights, LwF's teacher, DER's logits. After a round the strategy goes
on from the merged network with its own memories: a replay buffer replays the member's past events into the
group's network; EWC, SI and MAS pull towards the member's weights at its last experience, LwF distils from its
own previous network (which is why replay is the strategy that suits a group best).

Training runs in a worker thread: the parameters are read and loaded under its ``train_lock``. The run loop puts
the update and the merge off until the worker is between two windows, and the worker holds its next window for
them (`ContinualLearner.hold_between_windows`); put off too long, they wait for the window in training. A window
trained after the parameters were read for a merge and before the merged model is loaded is kept: the load
rebases it onto the merged model.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from driftline.learners.base import class_column
from driftline.learners.mergeable import Params, rebase
from driftline.learners.torch_sync import (
    class_rows,
    head_params,
    load_class_rows,
    load_head_params,
    load_scaler,
    output_layer,
    scaler_params,
)

if TYPE_CHECKING:
    from driftline.learners.continual import ContinualLearner


def sync_kind(self: ContinualLearner) -> str:
    p = self.params
    return json.dumps({"state": "driftline.continual/1", "task": self.task, "name": self.name,
                       "classes": list(self._fixed) if self._fixed else None, "hidden": p.hidden,
                       "max_classes": p.max_classes, "unfreeze_top_k": p.unfreeze_top_k, "strategy": p.strategy,
                       "backbone": self.fingerprint, "scale": self._scale is not None},
                      sort_keys=True, default=str)


def _params(self: ContinualLearner) -> Params:
    net = self.strategy.model
    params = head_params(net.head, net.top, per_class=True)
    params.update(class_rows(output_layer(net.head)[1], self._classes, self._index))
    params.update(scaler_params(self._scale))
    return params


def sync_params(self: ContinualLearner) -> Params:
    """The trained network's parameters (every window trained so far; pending ones are in later updates)."""
    with self.worker.train_lock:
        params = _params(self)
        self._sync_basis = (self.worker.trained_windows, params)
        return params


def load_sync_params(self: ContinualLearner, params: Params) -> None:
    """``params`` into the network the strategy trains and into the served one (a new publication)."""
    with self.worker.train_lock:
        trained, basis = self._sync_basis
        if trained != self.worker.trained_windows:  # windows trained since the parameters were read: kept
            params = rebase(params, _params(self), basis)
        net = self.strategy.model
        load_head_params(net.head, net.top, params)
        cols = load_class_rows(output_layer(net.head)[1], params, lambda label: class_column(
            label, self._index, self._classes, self._fixed, self.params.max_classes))
        load_scaler(self._scale, params)
        stats = self._scale_stats()
        if stats is not None:
            net.mean.copy_(stats[0].to(net.mean.device))
            net.std.copy_(stats[1].to(net.std.device))
        self._trained_classes = max([self._trained_classes, *(c + 1 for c in cols)])
        self._sync_basis = (self.worker.trained_windows, _params(self))
        self._republish()
