"""WindowedTreeClassifier: relearns a new concept as fast as CART on its window, forgets what left the window,
predicts exactly what scikit-learn's tree predicts, refuses bad parameters and non-numeric features."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import numpy as np
import pytest
from river.datasets import synth

from driftline.core import Event
from driftline.learners.factory import build_learner
from driftline.learners.windowed import WindowedTreeClassifier
from driftline.settings import ModelSettings


def _agrawal(function: int, seed: int, n: int) -> list[tuple[dict[str, Any], int]]:
    return list(itertools.islice(synth.Agrawal(classification_function=function, seed=seed), n))


def _prequential(model: WindowedTreeClassifier, data: list[tuple[dict[str, Any], int]]) -> list[bool]:
    hits = []
    for x, y in data:
        hits.append(model.predict_one(x) == y)
        model.learn_one(x, y)
    return hits


def test_learns_agrawal_function_4_far_faster_than_a_hoeffding_tree() -> None:
    from river.tree import HoeffdingTreeClassifier

    data = _agrawal(4, 7, 2000)
    windowed = np.mean(_prequential(WindowedTreeClassifier(seed=0), data)[1000:])
    ht = HoeffdingTreeClassifier(grace_period=50)
    hoeffding = np.mean(_prequential(ht, data)[1000:])  # type: ignore[arg-type]
    assert windowed > 0.95 and windowed > hoeffding + 0.1, (windowed, hoeffding)


def test_after_an_abrupt_change_the_window_forgets_the_old_concept() -> None:
    model = WindowedTreeClassifier(window=300, refit_every=20, seed=0)
    _prequential(model, _agrawal(0, 1, 1000))
    flipped = [(x, 1 - y) for x, y in _agrawal(0, 2, 600)]  # the same concept, labels inverted
    hits = _prequential(model, flipped)
    assert np.mean(hits[:50]) < 0.2 and np.mean(hits[-200:]) > 0.9  # wrong at first, then the new concept only


def test_predictions_are_scikit_learns_and_labels_come_back_as_given() -> None:
    model = WindowedTreeClassifier(seed=0)
    assert model.predict_proba_one({"a": 1.0}) == {} and model.predict_one({"a": 1.0}) is None  # before min_samples
    data = [(x, "yes" if y else "no") for x, y in _agrawal(2, 3, 800)]
    for x, y in data[:600]:
        model.learn_one(x, y)
    for x, _ in data[600:]:
        ref = model._tree.predict_proba(np.array([model._row(x)]))[0]
        got = model.predict_proba_one(x)
        assert set(got) == {"yes", "no"}
        assert all(abs(got[model._labels[c]] - r) < 1e-12 for c, r in zip(model._tree.classes_, ref, strict=True))


def test_refits_on_schedule_and_missing_features_are_missing_values() -> None:
    model = WindowedTreeClassifier(window=50, refit_every=10, min_samples=5)
    for i in range(4):
        model.learn_one({"a": float(i)}, i % 2)
    assert model._tree is None
    model.learn_one({"a": 4.0}, 0)
    first = model._tree
    assert first is not None
    for i in range(9):
        model.learn_one({"a": float(i), "b": 1.0}, i % 2)
    assert model._tree is first  # 9 since the fit
    model.learn_one({"b": 2.0}, 1)
    assert model._tree is not first and model._keys == ["a", "b"]
    assert model.predict_one({"b": 3.0}) in (0, 1)  # "a" missing: a NaN the tree routes


@pytest.mark.parametrize("params", [{"window": 1}, {"refit_every": 0}, {"min_samples": 1}, {"max_depth": 0},
                                    {"min_samples_leaf": 0}, {"window": 10.5}])
def test_bad_parameters_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(params))):
        WindowedTreeClassifier(**params)


def test_through_the_config_bad_parameters_and_strings_name_what_is_wrong() -> None:
    from driftline.errors import ConfigError

    with pytest.raises(ConfigError, match="window must be an integer >= 2"):
        build_learner(ModelSettings(name="WindowedTreeClassifier", params={"window": 1}))
    model = WindowedTreeClassifier(min_samples=2)
    model.learn_one({"a": 1.0}, 0)
    with pytest.raises(ValueError, match="feature 'a' is 'x'"):
        model.learn_one({"a": "x"}, 1)


def test_as_a_service_learner_it_checkpoints_and_resumes_identically() -> None:
    cfg = ModelSettings(name="WindowedTreeClassifier", params={"window": 200, "refit_every": 25}, seed=4)
    events = [Event(id=f"e{i}", features={k: float(v) for k, v in x.items()}, label=y)
              for i, (x, y) in enumerate(_agrawal(1, 5, 700))]
    a = build_learner(cfg)
    for e in events[:500]:
        a.predict_one(e)
        a.learn_one(e, e.label)  # type: ignore[arg-type]
    b = build_learner(cfg)
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    for e in events[500:]:
        assert a.predict_one(e) == b.predict_one(e)
        a.learn_one(e, e.label)  # type: ignore[arg-type]
        b.learn_one(e, e.label)  # type: ignore[arg-type]
