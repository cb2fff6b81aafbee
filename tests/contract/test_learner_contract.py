"""Every learner the config can name passes the same checks (River's `checks` idea)."""

from __future__ import annotations

import itertools
import pickle
import tempfile
from pathlib import Path
from typing import Any

import pytest

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError, LabelError, Prediction
from driftline.learners.base import Learner
from driftline.learners.capabilities import PROTOCOLS, Capability, background_trained, has_backbone
from driftline.learners.factory import build_learner
from driftline.learners.inputs import INVALID_FEATURES
from driftline.learners.registry import CLASSIFIERS, CONTINUAL, REGRESSORS, TORCH_HEADS
from driftline.settings import ModelSettings
from driftline.stream.sources import from_generator
from driftline.testing import DIGITS_CNN_BACKBONE, digit_images
from tests.tiny_models import AGRAWAL_NUMERIC, save_encoder, save_script, torch_backbone

Case = tuple[str, str, list[Any] | None, str]  # task, head name, classes, backbone
BACKBONES = ("identity", "torch", "torchscript")
IMAGE = "cnn"  # the packaged pretrained MNIST CNN on image events (scikit-learn's digits)
TEXT = ("bow", "tfidf")  # River heads on the text of the events (model.text_features), no backbone

# Any River estimator by its path inside river: a broad sample across modules (nested estimators as {name, params}).
# Not tree.SGTClassifier: River 0.26's quantizer divides by zero on a feature that is constant so far (one-hot
# columns are), so it fails to learn (learn_failed dead letters) on such streams.
HT = {"name": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}}
RIVER_CLASSIFIERS: dict[str, dict[str, Any]] = {
    "naive_bayes.BernoulliNB": {}, "linear_model.PAClassifier": {}, "linear_model.ALMAClassifier": {},
    "neighbors.KNNClassifier": {"n_neighbors": 5}, "tree.ExtremelyFastDecisionTreeClassifier": {"grace_period": 50},
    "ensemble.ADWINBaggingClassifier": {"model": HT, "n_models": 3},
    "ensemble.BaggingClassifier": {"model": {"name": "linear_model.LogisticRegression"}, "n_models": 3},
    "ensemble.AdaBoostClassifier": {"model": HT, "n_models": 3}, "ensemble.BOLEClassifier": {"model": HT},
    "ensemble.LeveragingBaggingClassifier": {"model": {"name": "LogisticRegression"}, "n_models": 3},
    "ensemble.SRPClassifier": {"n_models": 3}, "forest.AMFClassifier": {"n_estimators": 3},
    "multiclass.OneVsOneClassifier": {"classifier": {"name": "linear_model.LogisticRegression"}},
    "dummy.PriorClassifier": {}, "dummy.NoChangeClassifier": {},
}
RIVER_REGRESSORS: dict[str, dict[str, Any]] = {
    "linear_model.PARegressor": {}, "neighbors.KNNRegressor": {}, "rules.AMRules": {},
    "ensemble.EWARegressor": {"models": [{"name": "LinearRegression"}, {"name": "linear_model.PARegressor"}]},
    "forest.AMFRegressor": {"n_estimators": 3}, "forest.OXTRegressor": {}, "tree.SGTRegressor": {},
    "dummy.StatisticRegressor": {"statistic": {"name": "stats.Mean"}}, "linear_model.BayesianLinearRegression": {},
    "ensemble.BaggingRegressor": {"model": {"name": "linear_model.LinearRegression"}, "n_models": 3},
}
RIVER_PARAMS = {**RIVER_CLASSIFIERS, **RIVER_REGRESSORS}

CASES: list[Case] = [
    *[("classification", name, None, "identity") for name in CLASSIFIERS],
    *[("classification", name, [0, 1], "identity") for name in CLASSIFIERS],
    *[("regression", name, None, "identity") for name in REGRESSORS],
    *[("classification", name, None, "identity") for name in RIVER_CLASSIFIERS],
    ("classification", "linear_model.ALMAClassifier", [0, 1], "identity"),  # binary-only, no one-vs-rest
    *[("regression", name, None, "identity") for name in RIVER_REGRESSORS],
    # text through River's feature extraction: naive Bayes, linear models, a tree
    ("classification", "naive_bayes.MultinomialNB", None, "bow"),
    ("classification", "naive_bayes.ComplementNB", [0, 1], "bow"),
    ("classification", "LogisticRegression", None, "tfidf"),
    ("classification", "HoeffdingTreeClassifier", None, "bow"),
    ("regression", "LinearRegression", None, "tfidf"),
    # River heads on a pretrained torch backbone's embeddings (feature-extraction mode)
    ("classification", "SoftmaxRegression", None, "torch"),
    ("classification", "HoeffdingTreeClassifier", [0, 1], "torchscript"),
    ("regression", "LinearRegression", None, "torch"),
    # torch heads, on the features as a vector and on backbones (one with its top layer unfrozen)
    *[(task, head, classes, bb) for head in TORCH_HEADS for bb in BACKBONES
      for task, classes in (("classification", None), ("classification", [0, 1]), ("regression", None))],
    # the deep continual learner (Avalanche strategies in windows), trained synchronously here
    *[("classification", "Continual", classes, bb) for bb in BACKBONES for classes in (None, [0, 1])],
    # image events through a real pretrained CNN: a River head, a torch head with the top conv block unfrozen,
    # the continual learner
    ("classification", "SoftmaxRegression", None, IMAGE),
    ("classification", "GaussianNB", [0, 1], IMAGE),
    ("classification", "TorchLinear", None, IMAGE),
    ("classification", "Continual", [0, 1], IMAGE),
]
VECTOR_HEADS = {**TORCH_HEADS, **CONTINUAL}

_MODEL_DIR = Path(tempfile.mkdtemp(prefix="driftline-contract-"))


FRIEDMAN = [str(i) for i in range(10)]


def _backbone(kind: str, head: str, task: str) -> dict[str, Any]:
    names = AGRAWAL_NUMERIC if task == "classification" else FRIEDMAN
    if kind == IMAGE:
        return {**DIGITS_CNN_BACKBONE, "device": "cpu"}
    if kind in TEXT:
        return {}
    if kind == "identity":
        return {"kind": "identity", "features": names} if head in VECTOR_HEADS else {}
    if kind == "torch":
        return torch_backbone(save_encoder(_MODEL_DIR, in_dim=len(names)), features=names,
                              args={"in_dim": len(names), "out_dim": 8})
    return {"kind": "torchscript", "path": str(save_script(_MODEL_DIR, in_dim=len(names))), "features": names,
            "device": "cpu"}


def _params(case: Case) -> dict[str, Any]:
    if case[1] not in VECTOR_HEADS:
        return RIVER_PARAMS.get(case[1], {})
    params: dict[str, Any] = {"lr": 0.01}
    if case[1] in CONTINUAL:  # feature-extraction mode (unfrozen layers: tests/unit/test_continual.py)
        params.update(strategy="Replay", strategy_params={"mem_size": 100}, window_events=40, hidden=32,
                      synchronous=True)
    elif case[3] in ("torchscript", IMAGE):
        params["unfreeze_top_k"] = 1 if case[3] == "torchscript" else 3
    return params


def _ids(case: Case) -> str:
    _task, name, classes, backbone = case
    return f"{name}{'-classes' if classes else ''}{'' if backbone == 'identity' else '@' + backbone}" + (
        "-regression" if _task == "regression" and name in TORCH_HEADS else "")


def _stream(case: Case, n: int, seed: int = 1) -> list[Event]:
    task = case[0]
    if case[3] == IMAGE:
        classes = case[2] or range(10)
        images = digit_images(seed=seed, classes=classes)
        return [Event.model_validate({**images[i % len(images)], "id": f"e{i}"}) for i in range(n)]
    if case[3] in TEXT:  # the signal is in words: each event's text names its buckets
        return [Event(id=e.id, text=_words(e), label=e.label)
                for e in _stream((task, case[1], case[2], "identity"), n, seed)]
    if task == "classification":
        src = from_generator("Agrawal", params={"classification_function": 2}, seed=seed, id_prefix="e")
    else:
        src = from_generator("Friedman", seed=seed, id_prefix="e")
    evs = [Event.model_validate(e) for e in itertools.islice(src, n)]
    # one categorical feature, so one-hot encoding is exercised
    return [e.model_copy(update={"features": {**e.features, "cat": f"c{i % 3}"}}) for i, e in enumerate(evs)]


def _words(e: Event) -> str:
    return " ".join(f"{k}{int(float(v)) // 7}" if not isinstance(v, str) else f"is-{v}" for k, v in e.features.items())


def _make(case: Case) -> Learner:
    task, name, classes, backbone = case
    text = {"kind": "BagOfWords" if backbone == "bow" else "TFIDF"} if backbone in TEXT else None
    return build_learner(ModelSettings(task=task, name=name, classes=classes, seed=7,  # type: ignore[arg-type]
                                       params=_params(case), backbone=_backbone(backbone, name, task),
                                       text_features=text))


def _train(learner: Learner, events: list[Event]) -> list[Prediction]:
    preds = []
    for e in events:
        preds.append(learner.predict_one(e))
        assert e.label is not None
        learner.learn_one(e, e.label)
    return preds


@pytest.fixture(params=CASES, ids=_ids)
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


def test_implements_the_protocol(case: Case) -> None:
    learner = _make(case)
    assert isinstance(learner, Learner)
    assert learner.task == case[0] and learner.name == case[1]
    assert learner.version == 1 and learner.updates == 0


def test_declares_exactly_the_capabilities_it_implements(case: Case) -> None:
    """What the pipeline asks of a learner beyond the protocol comes from its class's declaration: every
    declared capability is implemented, and nothing implemented goes undeclared."""
    learner = _make(case)
    declared = type(learner).capabilities
    for cap, proto in PROTOCOLS.items():
        implemented = isinstance(learner, proto)
        assert (cap in declared) == implemented, \
            f"{type(learner).__name__}: {cap.value} declared={cap in declared}, implemented={implemented}"
    assert (background_trained(learner) is not None) == (Capability.BACKGROUND_TRAINED in declared)
    assert (has_backbone(learner) is not None) == (Capability.HAS_BACKBONE in declared)


def test_predicts_before_any_learning(case: Case) -> None:
    learner = _make(case)
    pred = learner.predict_one(_stream(case, 1)[0])
    assert isinstance(pred, Prediction)  # None value allowed, but no exception


def test_learning_keeps_predict_working_and_counts_updates(case: Case) -> None:
    learner = _make(case)
    events = _stream(case, 300)
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


def test_deterministic_with_a_seed(case: Case) -> None:
    events = _stream(case, 200)
    a = [p.value for p in _train(_make(case), events)]
    b = [p.value for p in _train(_make(case), events)]
    assert a == b


def test_state_round_trip_continues_identically(case: Case) -> None:
    events = _stream(case, 300)
    a = _make(case)
    _train(a, events[:200])
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = _make(case)
    b.load_state_dict(state)
    assert (b.version, b.updates) == (a.version, a.updates)
    assert [p.value for p in _train(a, events[200:])] == [p.value for p in _train(b, events[200:])]


def test_unseen_features_do_not_break_it(case: Case) -> None:
    learner = _make(case)
    events = _stream(case, 100)
    _train(learner, events)
    extra = events[0].model_copy(update={"features": {**events[0].features, "never_seen": 3.0, "cat": "brand-new"}})
    learner.predict_one(extra)
    assert extra.label is not None
    learner.learn_one(extra, extra.label)
    missing = events[1].model_copy(update={"features": {"salary": 1.0, "0": 1.0}})
    if case[3] == IMAGE:  # features are not what an image backbone reads: it reads the image, and needs one
        learner.predict_one(missing)
        with pytest.raises(InputError) as info:
            learner.predict_one(Event(id="f", features={"salary": 1.0}))
        assert info.value.reason == INPUT_KIND_MISMATCH and "reads `image`" in str(info.value)
    elif case[3] in ("identity", *TEXT) and case[1] not in VECTOR_HEADS:
        learner.predict_one(missing)  # River heads take any feature dict
    else:  # a backbone reads a fixed vector: a clear rejection naming what is missing
        with pytest.raises(InputError) as info:
            learner.predict_one(missing)
        assert info.value.reason == INVALID_FEATURES and "needs features" in str(info.value)


def test_bad_labels_raise_label_error_without_learning(case: Case) -> None:
    learner = _make(case)
    ev = _stream(case, 1)[0]
    bad: list[Any] = ["not-a-number", True] if case[0] == "regression" else [0.5]
    if case[2] is not None:
        bad.append(7)  # outside the configured class set
    for y in bad:
        with pytest.raises(LabelError) as info:
            learner.learn_one(ev, y)
        assert info.value.reason in ("invalid_label", "unknown_label")
    assert learner.updates == 0


def test_batch_preparation_changes_nothing(case: Case) -> None:
    """Predicting a batch prepared at once (batched backbone inference) gives exactly what event-by-event
    preparation gives: test-then-train holds within a batch."""
    events = _stream(case, 120)
    a, b = _make(case), _make(case)
    preds_a: list[Any] = []
    for i in range(0, len(events), 40):
        chunk = events[i:i + 40]
        a.prepare_batch(chunk)
        preds_a += [p.value for p in _train(a, chunk)]
    preds_b = [p.value for p in _train(b, events)]
    assert preds_a == pytest.approx(preds_b) if case[0] == "regression" else preds_a == preds_b


def test_state_learned_on_another_backbone_is_refused(case: Case) -> None:
    learner = _make(case)
    other_backbone = "torch" if case[3] != "torch" else "torchscript"
    if case[1] not in VECTOR_HEADS and other_backbone == "torchscript":
        other_backbone = "identity"
    other = _make((case[0], case[1], case[2], other_backbone))
    with pytest.raises(ValueError, match=r"backbone|unfreeze_top_k"):
        learner.load_state_dict(other.state_dict())
    assert learner.updates == 0


def test_state_of_another_model_is_refused(case: Case) -> None:
    learner = _make(case)
    other_name = "GaussianNB" if case[1] != "GaussianNB" else "LogisticRegression"
    other = build_learner(ModelSettings(name=other_name))
    with pytest.raises(ValueError, match=r"state is for|not a .* state"):
        learner.load_state_dict(other.state_dict())


def test_text_only_events_are_rejected_by_tabular_learners(case: Case) -> None:
    learner = _make(case)
    _train(learner, _stream(case, 20))
    text_only = Event(id="t1", text="a text with no features", label=1 if case[0] == "classification" else 1.0)
    if case[3] in TEXT:  # text learners take text alone, and refuse what is neither text nor features
        learner.predict_one(text_only)
        text_only = Event(id="t1", image="aGVsbG8=", label=1 if case[0] == "classification" else 1.0)  # type: ignore[arg-type]
    for call in (lambda: learner.predict_one(text_only), lambda: learner.learn_one(text_only, text_only.label)):
        with pytest.raises(InputError) as info:
            call()  # type: ignore[no-untyped-call]
        assert info.value.reason == INPUT_KIND_MISMATCH and "text" in str(info.value)
    assert learner.updates == 20


def test_a_mergeable_learner_s_parameters_are_data_that_round_trip(case: Case) -> None:
    """Mergeable learners (sync.mode average): the parameters survive the data-only wire format, loading them
    into a fresh learner of the same config reproduces every prediction, and merging a model with itself is
    that model."""
    from driftline.learners.capabilities import mergeable
    from driftline.learners.mergeable import decode, digest, encode, merge

    learner = _make(case)
    m = mergeable(learner)
    if m is None:
        pytest.skip("not mergeable")
    if case[3] == "tfidf":
        pytest.skip("TFIDF's document frequencies are not merged: settings refuse sync.mode average with TFIDF")
    events = _stream(case, 300)
    _train(learner, events[:200])
    params = m.sync_params()
    _, wire = decode(encode({"type": "test"}, params))
    assert wire is not None and digest(wire) == digest(params)
    fresh = _make(case)
    fm = mergeable(fresh)
    assert fm is not None and fm.sync_kind == m.sync_kind
    fm.load_sync_params(wire)
    assert digest(fm.sync_params()) == digest(params)
    # only what travels: the fresh learner predicts as the trained one (the same values; probabilities to float
    # rounding: a torch head that discovers classes keeps their columns in another order, so its softmax sums
    # in another order)
    for got, want in zip([fresh.predict_one(e) for e in events[200:]], [learner.predict_one(e) for e in events[200:]],
                         strict=True):
        assert got.value == want.value
        assert (got.proba is None) == (want.proba is None)
        if got.proba is not None and want.proba is not None:
            assert dict(got.proba) == pytest.approx(dict(want.proba), rel=1e-6, abs=1e-9)
    same = merge({}, [(3.0, params), (5.0, params)])
    for name, e in params.items():
        if e.kind == "mean":
            assert same[name].values == pytest.approx(e.values, rel=1e-12, abs=1e-15)
