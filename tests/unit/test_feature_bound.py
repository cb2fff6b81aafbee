"""model.max_features: a River head keeps at most that many feature names; names first seen once it is full
are left out (the event is still predicted and learned) and counted."""

from __future__ import annotations

import itertools
import random

from prometheus_client import CollectorRegistry

from driftline.core import Event
from driftline.learners.factory import build_learner
from driftline.learners.river_head import RiverLearner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import ModelSettings
from driftline.stream.pipeline import model_status
from driftline.stream.sources import from_generator


def _events(n: int, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for i, e in enumerate(itertools.islice(from_generator("SEA", seed=seed, id_prefix="b-"), n)):
        features = dict(e["features"])
        features[f"junk{rng.randrange(10**9)}"] = 1.0  # a producer sending a new random name every event
        features["colour"] = rng.choice(["red", "blue", "green"])  # one-hot: colour_red, ...
        out.append(Event(id=f"e{i}", features=features, label=e["label"]))
    return out


def test_names_beyond_the_bound_are_dropped_counted_and_the_bound_survives_a_checkpoint() -> None:
    learner = build_learner(ModelSettings(name="LogisticRegression", classes=[False, True], max_features=10))
    assert isinstance(learner, RiverLearner)
    events = _events(500)
    for e in events:
        learner.predict_one(e)
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    known = learner._prep.known
    assert len(known) == 10 and {"0", "1", "2"} <= known  # the first names seen; later ones dropped
    names = [{k if not isinstance(v, str) else f"{k}_{v}" for k, v in e.features.items()} for e in events]
    assert learner.features_dropped == sum(len(n - known) for n in names) > 450
    weights = learner._model._weights if hasattr(learner._model, "_weights") else learner._model.weights
    assert len(weights) <= 10
    restored = build_learner(ModelSettings(name="LogisticRegression", classes=[False, True], max_features=10))
    restored.load_state_dict(learner.state_dict())
    assert restored.features_dropped == learner.features_dropped and isinstance(restored, RiverLearner)
    assert restored._prep.known == learner._prep.known
    e = _events(1, seed=9)[0]
    assert restored.predict_one(e) == learner.predict_one(e)


def test_under_the_bound_nothing_changes_and_the_count_reaches_the_metrics() -> None:
    bounded = build_learner(ModelSettings(name="LogisticRegression", classes=[False, True], max_features=100_000))
    unbounded = build_learner(ModelSettings(name="LogisticRegression", classes=[False, True], max_features=None))
    for e in _events(300, seed=1):
        assert bounded.predict_one(e) == unbounded.predict_one(e)
        bounded.learn_one(e, e.label)  # type: ignore[arg-type]
        unbounded.learn_one(e, e.label)  # type: ignore[arg-type]
    assert bounded.features_dropped == unbounded.features_dropped == 0
    tight = build_learner(ModelSettings(name="GaussianNB", max_features=3))
    for e in _events(20, seed=2):
        tight.learn_one(e, e.label)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry, model=tight.name, task=tight.task)
    metrics.model_status.source = lambda: [model_status(tight)]
    assert registry.get_sample_value("driftline_features_dropped_total", {"model": "GaussianNB"}) == \
        tight.features_dropped > 0
