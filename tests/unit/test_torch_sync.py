"""Torch heads in sync.mode average (`learners.torch_sync`): members that discover classes in different orders
keep them in different output columns, and the merge averages each class's row, not each column."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.core import Event
from driftline.learners.capabilities import mergeable
from driftline.learners.factory import build_learner
from driftline.learners.mergeable import merge
from driftline.settings import ModelSettings

CFG = ModelSettings(name="TorchLinear", params={"lr": 0.05}, backbone={"kind": "identity", "features": ["x", "y"]},
                    seed=3)


def _event(i: int, label: int) -> Event:
    rng = np.random.default_rng(i)
    return Event(id=f"e{i}", features={"x": float(rng.normal(label, 0.3)), "y": float(rng.normal(-label, 0.3))},
                 label=label)


def _rows(learner: object) -> dict[int, np.ndarray]:
    head = learner.head  # type: ignore[attr-defined]
    return {label: head.weight[col].detach().double().numpy().copy()
            for label, col in learner._index.items()}  # type: ignore[attr-defined]


def test_each_class_row_is_averaged_whatever_column_each_member_gave_it() -> None:
    a, b = build_learner(CFG), build_learner(CFG)
    for i, label in enumerate([2, 0, 1] * 40):  # a meets class 2 first: column 0
        a.learn_one(_event(i, label), label)
    for i, label in enumerate([0, 1, 2] * 40):  # b meets class 0 first: column 0
        b.learn_one(_event(1000 + i, label), label)
    assert a._index != b._index  # type: ignore[attr-defined]
    rows_a, rows_b = _rows(a), _rows(b)
    ma, mb = mergeable(a), mergeable(b)
    assert ma is not None and mb is not None and ma.sync_kind == mb.sync_kind
    merged = merge({}, [(1.0, ma.sync_params()), (1.0, mb.sync_params())])
    for learner in (a, b):
        m = mergeable(learner)
        assert m is not None
        m.load_sync_params(merged)
        for label, row in _rows(learner).items():
            assert row == pytest.approx((rows_a[label] + rows_b[label]) / 2, rel=1e-6)
    probe = _event(5000, 1)
    pa, pb = a.predict_one(probe), b.predict_one(probe)
    assert pa.value == pb.value and dict(pa.proba or {}) == pytest.approx(dict(pb.proba or {}), rel=1e-6)
    # a member that never saw class 2 takes it from the group
    c = build_learner(CFG)
    for i, label in enumerate([0, 1] * 20):
        c.learn_one(_event(2000 + i, label), label)
    mc = mergeable(c)
    assert mc is not None
    mc.load_sync_params(merged)
    assert set(c._index) == {0, 1, 2}  # type: ignore[attr-defined]


def test_a_regression_head_that_adopted_the_group_model_predicts_before_it_learns() -> None:
    cfg = ModelSettings(name="TorchLinear", task="regression", backbone={"kind": "identity", "features": ["x", "y"]})
    a, fresh = build_learner(cfg), build_learner(cfg)
    for i in range(50):
        e = _event(i, i % 3)
        a.learn_one(e, float(i % 3))
    assert fresh.predict_one(_event(99, 1)).value is None
    ma, mf = mergeable(a), mergeable(fresh)
    assert ma is not None and mf is not None
    mf.load_sync_params(ma.sync_params())
    assert fresh.predict_one(_event(99, 1)).value == pytest.approx(a.predict_one(_event(99, 1)).value)
