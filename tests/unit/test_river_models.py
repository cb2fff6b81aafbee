"""Any River estimator by its path inside river, nested estimators, the task check, and River's text feature
extraction in front of a head (bounded vocabulary, TF-IDF state)."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError
from driftline.errors import ConfigError
from driftline.learners.factory import build_learner
from driftline.settings import ModelSettings, Settings


@pytest.mark.parametrize(("name", "task", "message"), [
    ("preprocessing.StandardScaler", "classification", "is a transformer, not a classifier"),
    ("linear_model.LinearRegression", "classification", "is a regressor, not a classifier"),
    ("naive_bayes.MultinomialNB", "regression", "is a classifier, not a regressor"),
    ("naive_bayes.MultinomialNBB", "classification",
     "river.naive_bayes has no class 'MultinomialNBB'; its estimators: BernoulliNB, ComplementNB, GaussianNB"),
    ("nowhere.Model", "classification", "there is no module river.nowhere"),
    ("optim.SGD", "classification", "river.optim holds no online models"),
    ("neighbors.LazySearch", "classification", r"is not an estimator \(a classifier is needed\)"),
    ("LogisticRegresion", "classification", "unknown classification model 'LogisticRegresion'"),
])
def test_a_model_that_is_not_one_for_the_task_is_a_settings_error(name: str, task: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ModelSettings(name=name, task=task)  # type: ignore[arg-type]


def test_nested_estimators_and_optimizers_are_built_with_their_parameters_checked() -> None:
    learner = build_learner(ModelSettings(name="ensemble.ADWINBaggingClassifier", seed=3, classes=[0, 1], params={
        "n_models": 2, "model": {"name": "linear_model.LogisticRegression",
                                 "params": {"optimizer": {"name": "SGD", "lr": 0.3}, "l2": 0.01}}}))
    model = learner._model  # type: ignore[attr-defined]
    assert type(model).__name__ == "ADWINBaggingClassifier" and model.n_models == 2 and model.seed == 3
    inner = model.model
    assert type(inner).__name__ == "LogisticRegression" and inner.l2 == 0.01 and inner.optimizer.learning_rate == 0.3
    with pytest.raises(ConfigError, match=r"model.params.model.params.l3: LogisticRegression has no parameter 'l3'"):
        build_learner(ModelSettings(name="ensemble.BaggingClassifier", params={
            "model": {"name": "LogisticRegression", "params": {"l3": 1}}}))
    with pytest.raises(ConfigError, match=r"model.params.models\[1\].name: river.tree has no class 'Nope'"):
        build_learner(ModelSettings(name="ensemble.EWARegressor", task="regression", params={
            "models": [{"name": "LinearRegression"}, {"name": "tree.Nope"}]}))


def _docs(n: int) -> list[Event]:
    words = [("goal puck skate ice", "hockey"), ("orbit rocket launch moon", "space")]
    return [Event(id=f"d{i}", text=f"{words[i % 2][0]} token{i}", label=words[i % 2][1]) for i in range(n)]


def test_bag_of_words_bounds_its_vocabulary_and_counts_what_it_leaves_out() -> None:
    learner = build_learner(ModelSettings(name="naive_bayes.MultinomialNB", max_features=12,
                                          text_features={"kind": "BagOfWords", "params": {"ngram_range": [1, 2]}}))
    for e in _docs(40):
        assert e.label is not None
        learner.learn_one(e, e.label)
    text = learner._text  # type: ignore[attr-defined]
    assert len(text.vocabulary.known) == 12 and learner.features_dropped > 0
    assert "goal puck" in text.vocabulary.known  # n-grams are joined with a space
    assert learner.predict_one(Event(id="q", text="the rocket and the moon")).value == "space"


def test_tfidf_state_counts_admitted_terms_only_and_round_trips() -> None:
    cfg = ModelSettings(name="LogisticRegression", max_features=6, text_features={"kind": "TFIDF"})
    learner = build_learner(cfg)
    for e in _docs(30):
        assert e.label is not None
        learner.learn_one(e, e.label)
    vec = learner._text.vectorizer  # type: ignore[attr-defined]
    assert vec.n == 30 and len(vec.dfs) == 6  # tokens past the bound never enter the document frequencies
    again = build_learner(cfg)
    again.load_state_dict(pickle.loads(pickle.dumps(learner.state_dict())))
    probe = _docs(40)[30:]
    assert [again.predict_one(e) for e in probe] == [learner.predict_one(e) for e in probe]
    with pytest.raises(ValueError, match="state was learned with text_features, the config has none"):
        build_learner(ModelSettings(name="LogisticRegression")).load_state_dict(learner.state_dict())


def test_text_features_settings_errors_name_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match=r"model.text_features.params.tokenizer: BagOfWords has no settable "
                                          r"parameter 'tokenizer'"):
        build_learner(ModelSettings(name="naive_bayes.MultinomialNB", text_features={"params": {"tokenizer": "x"}}))
    with pytest.raises(ValidationError, match="text_features is for River heads on the identity backbone"):
        ModelSettings(name="TorchLinear", text_features={}, backbone={"kind": "identity", "features": ["a"]})
    with pytest.raises(ValidationError, match=r"sync\.mode average with model\.text_features TFIDF"):
        Settings(model={"name": "LogisticRegression", "text_features": {"kind": "TFIDF"}}, sync={"mode": "average"})
    learner = build_learner(ModelSettings(name="naive_bayes.MultinomialNB", text_features={}))
    with pytest.raises(InputError, match=r"learns from `text` .* and `features`, and this event has `image`") as info:
        learner.predict_one(Event(id="i", image="aGVsbG8="))  # type: ignore[arg-type]
    assert info.value.reason == INPUT_KIND_MISMATCH
