"""The Continual learner's training data as Avalanche datasets, with fast repeated sample access.

Avalanche reads a sample through its dataset tree (flat-data index mapping, transform groups, data
attributes such as the task label): about 20 us per sample on this project's CI machine, where the torch
update of a 32-sample mini-batch of a small head costs about as much as 30 of those reads. Every
window is read ``train_epochs`` times, and replay memories are sampled over and over, so most reads repeat.

`window_dataset` builds the window's dataset as a `RowCachedDataset`: the same Avalanche class the
strategies expect (subsets and concatenations, i.e. replay buffers, keep the class), whose integer
indexing remembers each sample it built. The cache is only used when no transform applies anywhere in
the tree (then a sample is a pure function of its index; ours never carry transforms), is private to one
dataset object (copies start empty), is capped at `ROW_CACHE_LIMIT` samples (a large GDumb or replay
memory falls back to Avalanche's own path instead of holding a second copy of the rows' bookkeeping), and
is never pickled into a checkpoint.

`PinnedBatches` makes every training loader of a strategy pin its batches when it trains on CUDA (the
transfer to the device is then asynchronous: Avalanche moves batches with ``non_blocking=True``). It is
needed because Avalanche's Replay plugin builds its loader without the ``pin_memory`` it was given; it acts
at the start of each epoch, after every plugin has set the loader up. Memory loaders that strategies keep
for themselves (A-GEM, ER-ACE, DER) are built with ``pin_memory=False`` inside Avalanche and stay so.

`fast_ffcv_check` answers Avalanche's per-epoch "is this FFCV data?" question (which concatenates all the
loader's datasets to find out, ~2.5 ms per epoch here) at once for these datasets, which never are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.benchmarks.utils import data_loader as _avl_loader
from avalanche.benchmarks.utils.classification_dataset import TaskAwareSupervisedClassificationDataset
from avalanche.benchmarks.utils.data import _FlatDataWithTransform
from avalanche.core import SupervisedPlugin

ROW_CACHE_LIMIT = 100_000
_CACHE = "_driftline_rows"


def _transform_free(flat: Any) -> bool:
    """No transform (frozen or not, in any group) anywhere in an Avalanche flat-data tree."""
    if isinstance(flat, _FlatDataWithTransform):
        for groups in (flat._transform_groups, flat._frozen_transform_groups):
            if groups is not None and any(t is not None for t in groups.transform_groups.values()):
                return False
        return all(_transform_free(d) for d in flat._datasets)
    return True


class RowCachedDataset(TaskAwareSupervisedClassificationDataset):  # type: ignore[misc]
    """A task-aware supervised classification dataset whose integer reads are cached (see module doc)."""

    def __getitem__(self, idx: Any) -> Any:
        if not isinstance(idx, (int, np.integer)):  # a slice: a sub-dataset, Avalanche's own path
            return super().__getitem__(idx)
        idx = int(idx)
        cache = self.__dict__.get(_CACHE)
        if cache is None or cache[0] != id(self):  # copies start anew (copy.copy drops it via __getstate__)
            usable = len(self) <= ROW_CACHE_LIMIT and _transform_free(self._flat_data)
            cache = (id(self), {} if usable else None)
            self.__dict__[_CACHE] = cache
        rows: dict[int, Any] | None = cache[1]
        if rows is None:
            return super().__getitem__(idx)
        row = rows.get(idx)
        if row is None:
            row = rows[idx] = super().__getitem__(idx)
        return list(row)  # a fresh list per read, as Avalanche returns

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop(_CACHE, None)
        return state


def window_dataset(x: Any, y: Any, targets: Sequence[int]) -> RowCachedDataset:
    """One window of examples (``x`` float tensor, ``y`` long tensor) as a task-0 classification dataset."""
    ds = _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=list(targets))
    if type(ds) is not TaskAwareSupervisedClassificationDataset:  # pragma: no cover - Avalanche changed
        raise TypeError(f"unexpected Avalanche dataset class {type(ds).__name__}")
    ds.__class__ = RowCachedDataset  # same state, one subclass down: no copy of the data
    return cast(RowCachedDataset, ds)


class PinnedBatches(SupervisedPlugin):  # type: ignore[misc]
    """On CUDA, the epoch's training loader pins its batches (see module doc); a no-op on CPU."""

    def before_training_epoch(self, strategy: Any, *args: Any, **kwargs: Any) -> None:
        loader = strategy.dataloader
        if strategy.device.type == "cuda" and isinstance(getattr(loader, "loader_kwargs", None), dict):
            loader.loader_kwargs["pin_memory"] = True


_original_ffcv_check: Callable[[list[Any]], bool] = _avl_loader.has_ffcv_support


def fast_ffcv_check(datasets: list[Any]) -> bool:
    """Avalanche's FFCV check, answered at once for our datasets (FFCV needs `enable_ffcv` on a leaf)."""
    if datasets and all(isinstance(d, RowCachedDataset) for d in datasets):
        return False
    return _original_ffcv_check(datasets)


def install() -> None:
    """Route Avalanche's data loaders through `fast_ffcv_check` (idempotent)."""
    _avl_loader.has_ffcv_support = fast_ffcv_check
