"""The Continual learner's Avalanche datasets: cached reads are Avalanche's reads, buffers keep the class,
copies and pickles never carry a cache, transforms and huge datasets take Avalanche's own path."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
from avalanche.benchmarks.utils import data_loader as avl_loader
from avalanche.training.storage_policy import ExperienceBalancedBuffer

from driftline.learners import avalanche_data
from driftline.learners.avalanche_data import RowCachedDataset, window_dataset


def _data(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _same(a: list[object], b: list[object]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(u, v) if isinstance(u, torch.Tensor) else u == v for u, v in zip(a, b, strict=True))


def test_reads_equal_avalanches_own_and_are_served_from_the_cache() -> None:
    x, y = _data()
    plain = _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=y.tolist())
    fast = window_dataset(x, y, y.tolist())
    for i in (0, 7, 39, 7):
        assert _same(fast[i], plain[i]) and fast[i] is not fast[i]  # equal content, a fresh list each read
    assert len(fast.__dict__[avalanche_data._CACHE][1]) == 3
    assert _same(fast[np.int64(5)], plain[5])  # numpy integers, as samplers may give


def test_subsets_concats_and_replay_buffers_keep_the_class_and_the_right_rows() -> None:
    x, y = _data()
    fast = window_dataset(x, y, y.tolist())
    sub = fast.subset([3, 1, 30])
    assert isinstance(sub, RowCachedDataset) and _same(sub[2], fast[30])
    both = sub.concat(window_dataset(x[:2], y[:2], y[:2].tolist()))
    assert isinstance(both, RowCachedDataset) and _same(both[4], fast[1])
    clone = copy.copy(fast)  # Avalanche's shallow clones (with_transforms, train(), eval()) start empty
    assert avalanche_data._CACHE not in clone.__dict__ and _same(clone[30], fast[30])
    assert clone.__dict__[avalanche_data._CACHE] is not fast.__dict__[avalanche_data._CACHE]

    class _Strategy:  # what the buffer reads from the strategy
        def __init__(self, data: RowCachedDataset) -> None:
            self.experience = type("Exp", (), {"dataset": data, "current_experience": 0})()

    buffer = ExperienceBalancedBuffer(max_size=20)
    buffer.update(_Strategy(fast))
    assert isinstance(buffer.buffer, RowCachedDataset) and len(buffer.buffer) == 20
    rows = {tuple(x[i].tolist()) for i in range(40)}
    assert all(tuple(buffer.buffer[i][0].tolist()) in rows for i in range(20))


def test_a_pickled_dataset_carries_no_cache_and_reads_the_same() -> None:
    x, y = _data()
    fast = window_dataset(x, y, y.tolist())
    fast[3]
    back = pickle.loads(pickle.dumps(fast))
    assert avalanche_data._CACHE not in back.__dict__ and _same(back[3], fast[3])


def test_datasets_with_transforms_or_over_the_limit_are_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    with_transform = window_dataset(x, y, y.tolist()).replace_current_transform_group(lambda v: v * 2)
    assert torch.equal(with_transform[0][0], x[0] * 2)
    assert with_transform.__dict__[avalanche_data._CACHE][1] is None
    monkeypatch.setattr(avalanche_data, "ROW_CACHE_LIMIT", 39)
    big = window_dataset(x, y, y.tolist())
    assert _same(big[1], [x[1], int(y[1]), 0]) and big.__dict__[avalanche_data._CACHE][1] is None


def test_the_ffcv_check_short_cut_answers_for_our_datasets_only(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(avalanche_data, "_original_ffcv_check", lambda ds: calls.append(len(ds)) or False)
    monkeypatch.setattr(avl_loader, "has_ffcv_support", avl_loader.has_ffcv_support)  # undone after the test
    avalanche_data.install()
    assert avl_loader.has_ffcv_support is avalanche_data.fast_ffcv_check
    x, y = _data()
    ours = window_dataset(x, y, y.tolist())
    assert avl_loader.has_ffcv_support([ours, ours.subset([1])]) is False and calls == []
    plain = _make_taskaware_tensor_classification_dataset(x, y, task_labels=0, targets=y.tolist())
    avl_loader.has_ffcv_support([ours, plain])
    assert calls == [2]


def test_pinned_batches_pins_the_loader_replay_really_trains_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay's plugin swaps in its own loader (without pin_memory) at each experience's start; the pinning
    acts later, at each epoch, on the loader that then serves the batches."""
    from types import SimpleNamespace

    from avalanche.benchmarks.utils.data_loader import ReplayDataLoader

    x, y = _data()
    loader = ReplayDataLoader(window_dataset(x, y, y.tolist()), window_dataset(x[:8], y[:8], y[:8].tolist()),
                              batch_size=4, batch_size_mem=4)
    plugin = avalanche_data.PinnedBatches()
    plugin.before_training_epoch(SimpleNamespace(device=torch.device("cpu"), dataloader=loader))
    assert "pin_memory" not in loader.loader_kwargs  # CPU: nothing to pin for
    plugin.before_training_epoch(SimpleNamespace(device=torch.device("cuda"), dataloader=loader))
    assert loader.loader_kwargs["pin_memory"] is True

    seen: list[str] = []
    monkeypatch.setattr(avalanche_data.PinnedBatches, "before_training_epoch",
                        lambda self, strategy, **kw: seen.append(type(strategy.dataloader).__name__))
    from tests.unit.test_continual import _events, _feed, _learner

    learner = _learner(strategy="Replay", strategy_params={"mem_size": 20}, window_events=50)
    _feed(learner, _events(100))
    learner.close()
    # the first experience's torch DataLoader gets pin_memory from train(); the second is Replay's own
    assert seen == ["DataLoader", "ReplayDataLoader"]
