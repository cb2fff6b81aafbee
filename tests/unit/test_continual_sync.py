"""The Continual learner in sync.mode average (`learners.continual_sync`): its network averaged per class row,
the standardiser merged exactly, the served network replaced, the strategy's own memories kept, a window trained
between reading and loading kept, and the group's round numbering the versions."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from driftline.core import Event
from driftline.learners.capabilities import mergeable
from driftline.learners.continual import ContinualLearner
from driftline.learners.factory import build_learner
from driftline.learners.mergeable import merge
from driftline.learners.training_worker import Window
from driftline.monitoring.metrics import SyncMetrics
from driftline.settings import ModelSettings, SyncSettings
from driftline.stream.sync import Syncer, SyncState
from tests.unit.test_syncer import Log, Reader, Writer

FEATURES = {"kind": "identity", "features": ["x", "y"]}


def _learner(**params: Any) -> ContinualLearner:
    base: dict[str, Any] = {"window_events": 30, "hidden": 8, "synchronous": True, "lr": 0.02,
                            "strategy": "Replay", "strategy_params": {"mem_size": 60}}
    learner = build_learner(ModelSettings(name="Continual", backbone=FEATURES, params={**base, **params}, seed=3))
    assert isinstance(learner, ContinualLearner)
    return learner


def _event(i: int, label: int) -> Event:
    rng = np.random.default_rng(i)
    return Event(id=f"e{i}", features={"x": float(rng.normal(label, 0.3)), "y": float(rng.normal(-label, 0.3))},
                 label=label)


def _learn(learner: ContinualLearner, events: list[Event]) -> None:
    learner.prepare_batch(events)
    for e in events:
        assert e.label is not None
        learner.learn_one(e, e.label)


def _rows(learner: ContinualLearner) -> dict[int, np.ndarray]:
    out = learner.strategy.model.head[-1]
    return {label: out.weight[col].detach().double().numpy().copy()
            for label, col in learner._index.items()}  # type: ignore[misc]


def _replay_memory(learner: ContinualLearner) -> int:
    """Examples in the Replay strategy's buffer."""
    from avalanche.training.plugins import ReplayPlugin

    plugin = next(p for p in learner.strategy.plugins if isinstance(p, ReplayPlugin))
    return len(plugin.storage_policy.buffer)


def _hidden(learner: ContinualLearner) -> np.ndarray:
    return learner.strategy.model.head[0].weight.detach().double().numpy().copy()


def test_each_class_row_and_the_hidden_layer_are_averaged_and_the_served_network_is_the_merged_one() -> None:
    a, b = _learner(), _learner()
    _learn(a, [_event(i, label) for i, label in enumerate([2, 0, 1] * 30)])  # a meets class 2 first
    _learn(b, [_event(1000 + i, label) for i, label in enumerate([0, 1, 2] * 30)])
    assert a._index != b._index
    rows_a, rows_b, hid_a, hid_b = _rows(a), _rows(b), _hidden(a), _hidden(b)
    ma, mb = mergeable(a), mergeable(b)
    assert ma is not None and mb is not None and ma.sync_kind == mb.sync_kind
    merged = merge({}, [(1.0, ma.sync_params()), (1.0, mb.sync_params())])
    mem_a = _replay_memory(a)
    for m, learner in ((ma, a), (mb, b)):
        m.load_sync_params(merged)
        for label, row in _rows(learner).items():
            assert row == pytest.approx((rows_a[label] + rows_b[label]) / 2, rel=1e-5)
        assert _hidden(learner) == pytest.approx((hid_a + hid_b) / 2, rel=1e-5, abs=1e-7)
    assert _replay_memory(a) == mem_a > 0  # the replay buffer stays the member's
    probe = [_event(5000, 1), _event(5001, 0)]
    a.prepare_batch(probe)
    b.prepare_batch(probe)
    for pa, pb in zip(a.predict_many(probe), b.predict_many(probe), strict=True):  # the served network: merged
        assert pa.value == pb.value and dict(pa.proba or {}) == pytest.approx(dict(pb.proba or {}), rel=1e-5)
    # a member that never saw class 2 takes it from the group, and predicts it
    c = _learner()
    _learn(c, [_event(2000 + i, label) for i, label in enumerate([0, 1] * 15)])
    mc = mergeable(c)
    assert mc is not None
    mc.load_sync_params(merged)
    assert set(c._index) == {0, 1, 2} and c._trained_classes == 3
    c.prepare_batch(probe)
    assert set(c.predict_many(probe)[0].proba or {}) == {0, 1, 2}


def test_the_standardiser_of_raw_features_is_merged_exactly() -> None:
    a, b = _learner(), _learner()
    ea = [_event(i, i % 2) for i in range(60)]
    eb = [_event(100 + i, i % 2) for i in range(90)]
    _learn(a, ea)
    _learn(b, eb)
    ma, mb = mergeable(a), mergeable(b)
    assert ma is not None and mb is not None
    merged = merge({}, [(60.0, ma.sync_params()), (90.0, mb.sync_params())])
    ma.load_sync_params(merged)
    xs = torch.tensor([[e.features["x"], e.features["y"]] for e in ea + eb], dtype=torch.float64)
    assert a._scale is not None and a._scale.n == 150
    assert a._scale.mean.numpy() == pytest.approx(xs.mean(0).numpy(), rel=1e-6)  # (float32 inputs)
    net = a._published[0]
    assert net.mean.double().numpy() == pytest.approx(xs.mean(0).numpy(), rel=1e-5)  # the served copy's input
    assert net.std.double().numpy() == pytest.approx(xs.std(0).numpy(), rel=1e-5)


def test_a_window_trained_between_reading_and_loading_is_kept() -> None:
    a = _learner()
    _learn(a, [_event(i, i % 2) for i in range(60)])
    m = mergeable(a)
    assert m is not None
    now = m.sync_params()
    merged = merge({}, [(1.0, now)])  # the group's model: here, this member's own (nothing to average)
    _learn(a, [_event(500 + i, i % 2) for i in range(30)])  # a window trains after the read
    after = _hidden(a)
    m.load_sync_params(merged)  # rebased: merged + (what the window learned)
    assert _hidden(a) == pytest.approx(after, rel=1e-6, abs=1e-9)


def test_the_update_waits_for_a_window_in_training_and_never_sees_half_of_one() -> None:
    a = _learner(synchronous=False, window_events=1000)
    m = mergeable(a)
    assert m is not None
    started, release = threading.Event(), threading.Event()
    train = a.worker.train_fn

    def slow(w: Window) -> None:
        started.set()
        release.wait(5)
        train(w)

    a.worker.train_fn = slow
    _learn(a, [_event(i, i % 2) for i in range(40)])
    a.drain(0)  # seals the window: the worker takes it
    assert started.wait(5)
    out: list[Any] = []
    reader = threading.Thread(target=lambda: out.append(m.sync_params()))
    reader.start()
    reader.join(0.3)
    assert reader.is_alive()  # blocked on the window in training
    release.set()
    reader.join(5)
    assert out and a.worker.trained_windows == 1
    a.close()


def test_the_group_numbers_its_versions_and_windows_do_not(tmp_path: Any) -> None:
    a = _learner()
    _learn(a, [_event(i, i % 2) for i in range(30)])
    assert a.version == 2  # alone: every trained window is a version
    m = mergeable(a)
    assert m is not None
    log = Log()
    syncer = Syncer(SyncSettings(mode="average", every_events=30), a, m, SyncState(), topic="sync", group="g",
                    member="m0", writer=Writer(log), reader=Reader(log), metrics=SyncMetrics(CollectorRegistry()))
    syncer.join()
    assert a.version == 1  # the group's round 0 + 1
    _learn(a, [_event(100 + i, i % 2) for i in range(30)])
    assert a.version == 1
    assert syncer.due()
    syncer.prepare()
    assert syncer.state.pub_adapted is False  # a trained window is not an adaptation
    syncer.send_update()
    syncer.poll()
    assert a.version == 2 and syncer.rounds.merged_round == 1
