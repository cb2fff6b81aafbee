"""Every learner the config can name passes the same checks (River's `checks` idea)."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import pytest

from driftline.learners.base import INPUT_KIND_MISMATCH, InputError, LabelError, Learner, Prediction
from driftline.learners.registry import CLASSIFIERS, REGRESSORS
from driftline.learners.river_head import build_learner
from driftline.settings import ModelSettings
from driftline.stream.event import Event
from driftline.stream.sources import from_generator

CASES: list[tuple[str, str, list[Any] | None]] = [
    *[("classification", name, None) for name in CLASSIFIERS],
    *[("classification", name, [0, 1]) for name in CLASSIFIERS],
    *[("regression", name, None) for name in REGRESSORS],
]


def _ids(case: tuple[str, str, list[Any] | None]) -> str:
    _task, name, classes = case
    return f"{name}{'-classes' if classes else ''}"


def _stream(task: str, n: int, seed: int = 1) -> list[Event]:
    if task == "classification":
        src = from_generator("Agrawal", params={"classification_function": 2}, seed=seed, id_prefix="e")
    else:
        src = from_generator("Friedman", seed=seed, id_prefix="e")
    evs = [Event.model_validate(e) for e in itertools.islice(src, n)]
    # one categorical feature, so one-hot encoding is exercised
    return [e.model_copy(update={"features": {**e.features, "cat": f"c{i % 3}"}}) for i, e in enumerate(evs)]


def _make(case: tuple[str, str, list[Any] | None]) -> Learner:
    task, name, classes = case
    return build_learner(ModelSettings(task=task, name=name, classes=classes, seed=7))  # type: ignore[arg-type]


def _train(learner: Learner, events: list[Event]) -> list[Prediction]:
    preds = []
    for e in events:
        preds.append(learner.predict_one(e))
        assert e.label is not None
        learner.learn_one(e, e.label)
    return preds


@pytest.fixture(params=CASES, ids=_ids)
def case(request: pytest.FixtureRequest) -> tuple[str, str, list[Any] | None]:
    return request.param  # type: ignore[no-any-return]


def test_implements_the_protocol(case: tuple[str, str, list[Any] | None]) -> None:
    learner = _make(case)
    assert isinstance(learner, Learner)
    assert learner.task == case[0] and learner.name == case[1]
    assert learner.version == 1 and learner.updates == 0


def test_predicts_before_any_learning(case: tuple[str, str, list[Any] | None]) -> None:
    learner = _make(case)
    pred = learner.predict_one(_stream(case[0], 1)[0])
    assert isinstance(pred, Prediction)  # None value allowed, but no exception


def test_learning_keeps_predict_working_and_counts_updates(case: tuple[str, str, list[Any] | None]) -> None:
    learner = _make(case)
    events = _stream(case[0], 300)
    preds = _train(learner, events)
    assert learner.updates == 300
    last = preds[-1]
    assert last.value is not None
    if case[0] == "classification":
        labels = {e.label for e in events}
        assert last.value in labels
        assert last.proba is not None and set(last.proba) <= labels | {False, True}
        assert sum(last.proba.values()) == pytest.approx(1.0, abs=1e-6)
    else:
        assert isinstance(last.value, float)


def test_deterministic_with_a_seed(case: tuple[str, str, list[Any] | None]) -> None:
    events = _stream(case[0], 200)
    a = [p.value for p in _train(_make(case), events)]
    b = [p.value for p in _train(_make(case), events)]
    assert a == b


def test_state_round_trip_continues_identically(case: tuple[str, str, list[Any] | None]) -> None:
    events = _stream(case[0], 300)
    a = _make(case)
    _train(a, events[:200])
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = _make(case)
    b.load_state_dict(state)
    assert (b.version, b.updates) == (a.version, a.updates)
    assert [p.value for p in _train(a, events[200:])] == [p.value for p in _train(b, events[200:])]


def test_unseen_features_do_not_break_it(case: tuple[str, str, list[Any] | None]) -> None:
    learner = _make(case)
    events = _stream(case[0], 100)
    _train(learner, events)
    odd = events[0].model_copy(update={"features": {"never_seen": 3.0, "cat": "brand-new"}})
    learner.predict_one(odd)
    assert odd.label is not None
    learner.learn_one(odd, odd.label)
    missing = events[1].model_copy(update={"features": {"salary": 1.0}})
    learner.predict_one(missing)


def test_bad_labels_raise_label_error_without_learning(case: tuple[str, str, list[Any] | None]) -> None:
    learner = _make(case)
    ev = _stream(case[0], 1)[0]
    bad: list[Any] = ["not-a-number", True] if case[0] == "regression" else [0.5]
    if case[2] is not None:
        bad.append(7)  # outside the configured class set
    for y in bad:
        with pytest.raises(LabelError) as info:
            learner.learn_one(ev, y)
        assert info.value.reason in ("invalid_label", "unknown_label")
    assert learner.updates == 0


def test_state_of_another_model_is_refused(case: tuple[str, str, list[Any] | None]) -> None:
    learner = _make(case)
    other_name = "GaussianNB" if case[1] != "GaussianNB" else "LogisticRegression"
    other = build_learner(ModelSettings(name=other_name))
    with pytest.raises(ValueError, match="state is for"):
        learner.load_state_dict(other.state_dict())


def test_text_only_events_are_rejected_by_tabular_learners(case: tuple[str, str, list[Any] | None]) -> None:
    learner = _make(case)
    _train(learner, _stream(case[0], 20))
    text_only = Event(id="t1", text="a text with no features", label=1 if case[0] == "classification" else 1.0)
    for call in (lambda: learner.predict_one(text_only), lambda: learner.learn_one(text_only, text_only.label)):
        with pytest.raises(InputError) as info:
            call()  # type: ignore[no-untyped-call]
        assert info.value.reason == INPUT_KIND_MISMATCH and "text" in str(info.value)
    assert learner.updates == 20
