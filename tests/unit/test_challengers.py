"""Champion and challengers in the pipeline: every model predicts and learns every event, the champion's
prediction is served (with its name), a better challenger is promoted by the race at an audited point, the
checkpoint keeps every model and who serves, delayed labels keep each model's own prediction, and a
challenger's failure never costs the served stream anything."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from driftline.core import Event, Label, Prediction
from driftline.learners.base import Learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import Settings
from driftline.stream.labels import LabelJoin
from driftline.stream.observers import Quality, Served
from driftline.stream.pipeline import learners_from_settings, processor_from_settings
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord
from driftline.stream.sink import OutputSink
from tests.unit.test_property_bad_input import MemoryWriter

WEAK_STRONG: dict[str, Any] = {
    "models": {"weak": {"name": "dummy.PriorClassifier"}, "strong": {"name": "LogisticRegression"}},
    "promotion": {"schedule": "window", "window": 200, "min_events": 200, "cooldown": 200, "alpha": 0.01},
    "topics": {"audit": "audit", "shadow": "shadow"},
}


def _settings(**kw: Any) -> Settings:
    return Settings(**{**WEAK_STRONG, **kw})


def _pipeline(settings: Settings, learners: Any = None, labels_topic: str | None = None
              ) -> tuple[EventProcessor, MemoryWriter, CollectorRegistry]:
    writer, reg = MemoryWriter(), CollectorRegistry()
    metrics = ServiceMetrics(reg, model=settings.serving_model, task="classification")
    proc = processor_from_settings(settings, learners or learners_from_settings(settings),
                                   OutputSink(writer, "pred", "dlq", metrics), metrics, labels_topic=labels_topic,
                                   audit_topic=settings.topics.audit)
    return proc, writer, reg


def _records(n: int, seed: int, start: int = 0, labeled: bool = True) -> list[InboundRecord]:
    """A linearly separable stream (label: x > y) that LogisticRegression learns and a prior cannot."""
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
        ev: dict[str, Any] = {"id": f"e{i}", "features": {"x": x, "y": y}}
        if labeled:
            ev["label"] = bool(x > y)
        out.append(InboundRecord("in", 0, i, 1_700_000_000_000 + i, None, orjson.dumps(ev)))
    return out


def _served(writer: MemoryWriter, topic: str = "pred") -> list[dict[str, Any]]:
    return [json.loads(v or b"") for t, _, v, _ in writer.records if t == topic]


def test_the_better_challenger_is_promoted_and_predictions_switch_model_at_the_audited_point() -> None:
    proc, writer, reg = _pipeline(_settings())
    assert proc.champion.name == "weak"
    for i in range(0, 1000, 100):
        proc.process(_records(100, seed=i, start=i))
    served = _served(writer)
    assert len(served) == 1000
    promotions = [json.loads(v or b"") for t, _, v, _ in writer.records if t == "audit"]
    promotions = [p for p in promotions if p["type"] == "promotion"]
    assert len(promotions) == 1, promotions
    p = promotions[0]
    assert (p["from"], p["to"], p["reason"], p["test"], p["by"]) == ("weak", "strong", "test", "mcnemar_exact", "race")
    assert p["labeled"] == 200 and p["window"] == 200 and p["p_value"] < 0.01 and p["error_to"] < p["error_from"]
    # the prior predicts nothing before its first label: the race scores from the second event on, so the
    # evidence is complete with the label of event e200 (offset 200), which the audit record names
    assert (p["event_id"], p["source"]["offset"]) == ("e200", 200)
    # events up to that one were served by the prior, every one after it by LogisticRegression
    assert {s["model"] for s in served[:201]} == {"weak"} and {s["model"] for s in served[201:]} == {"strong"}
    shadow = _served(writer, "shadow")
    assert len(shadow) == 1000 and {s["model"] for s in shadow[:201]} == {"strong"}
    assert {s["model"] for s in shadow[201:]} == {"weak"}
    assert proc.champion.name == "strong" and proc.learner is proc.lane("strong").learner
    value = reg.get_sample_value
    assert value("driftline_promotions_total", {"model": "strong", "reason": "test"}) == 1
    assert value("driftline_model_serving", {"model": "strong"}) == 1
    assert value("driftline_model_serving", {"model": "weak"}) == 0
    assert value("driftline_model_updates", {"model": "weak"}) == value("driftline_model_updates",
                                                                          {"model": "strong"}) == 1000
    # each model's own accuracy, and what was served (the prior's first 200, then the winner's)
    own = {lane.name: lane.find(Quality) for lane in proc.lanes}
    served_q = proc.find(Served)
    assert served_q is not None and all(q is not None for q in own.values())
    strong, weak = own["strong"].tracker.cumulative, own["weak"].tracker.cumulative  # type: ignore[union-attr]
    assert strong > 0.9 and weak < 0.65
    assert weak < served_q.tracker.cumulative < strong
    assert value("driftline_prequential_accuracy_ratio", {"model": "served", "window": "cumulative"}) == pytest.approx(
        served_q.tracker.cumulative)


def test_the_checkpoint_keeps_every_model_and_who_serves() -> None:
    settings = _settings()
    proc, _, _ = _pipeline(settings)
    for i in range(0, 600, 100):
        proc.process(_records(100, seed=i, start=i))
    assert proc.champion.name == "strong"
    state = proc.state_dict()
    assert set(state["lanes"]) == {"weak", "strong"} and state["race"]["champion"] == "strong"
    restored, writer, _ = _pipeline(settings)
    restored.load_state_dict(state)
    assert restored.champion.name == "strong"
    assert restored.lane("weak").learner.updates == restored.lane("strong").learner.updates == 600
    restored.process(_records(10, seed=99, start=600))
    assert {s["model"] for s in _served(writer)} == {"strong"}
    # a state of one model cannot be loaded into a race, nor a race's into one model
    one = Settings(model={"name": "LogisticRegression"})
    single, _, _ = _pipeline(one)
    with pytest.raises(ValueError, match="several models"):
        single.load_state_dict(state)
    with pytest.raises(ValueError, match="holds one model"):
        restored.load_state_dict(single.state_dict())


def test_a_model_added_to_the_config_starts_fresh_beside_the_restored_ones() -> None:
    proc, _, _ = _pipeline(_settings())
    proc.process(_records(300, seed=1))
    more = _settings(models={**WEAK_STRONG["models"], "nb": {"name": "GaussianNB"}})
    grown, _, _ = _pipeline(more)
    grown.load_state_dict(proc.state_dict())
    assert grown.champion.name == "strong" and grown.lane("nb").learner.updates == 0


def test_delayed_labels_score_each_model_with_its_own_prediction_and_survive_a_partition_move() -> None:
    settings = _settings(topics={"labels": "labels", "audit": "audit"},
                         promotion={"schedule": "window", "window": 100, "min_events": 0})
    proc, _, _ = _pipeline(settings, labels_topic="labels")
    events = _records(400, seed=4, labeled=False)
    labels = []
    for r in _records(400, seed=4):
        ev = orjson.loads(r.value or b"")
        labels.append(InboundRecord("labels", 0, r.offset, r.timestamp_ms, None,
                                    orjson.dumps({"id": ev["id"], "label": ev["label"]})))
    proc.process(events[:200])
    assert proc.labels is not None
    pending = proc.labels.join.peek("e0")
    assert pending is not None and pending.shadow is not None and set(pending.shadow) == {"weak", "strong"}
    # the pending predictions move with their partition (as data) and keep every model's prediction
    data = proc.labels.export_partition(0)
    moved = LabelJoin(3_600_000, 100_000)
    moved.load_partition(0, json.loads(json.dumps(data)))
    entry = moved.peek("e0")
    assert entry is not None and entry.shadow == pending.shadow
    proc.process(labels[:200])
    proc.process(events[200:])
    proc.process(labels[200:])
    strong = proc.lane("strong").find(Quality)
    weak = proc.lane("weak").find(Quality)
    assert strong is not None and weak is not None
    assert strong.tracker.n == weak.tracker.n == 400
    # the first 200 events were predicted before any label was learned (neither model could predict): the
    # race compares the 200 that both predicted, each with its own prediction
    assert proc.contest is not None and proc.contest.race.labeled == 200
    assert strong.tracker.cumulative > 0.45 > 0.35 > weak.tracker.cumulative
    assert proc.champion.name == "strong"


class Broken:
    """A challenger with a bug: it fails on every event."""

    task = "classification"
    name = "broken"
    capabilities: frozenset[Any] = frozenset()
    version, updates, features_dropped = 1, 0, 0

    def prepare_batch(self, xs: Any) -> None:
        raise RuntimeError("no batch today")

    def predict_one(self, x: Event) -> Prediction:
        raise RuntimeError("cannot predict")

    def learn_one(self, x: Event, y: Label | float) -> None:
        raise RuntimeError("cannot learn")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Any) -> None:
        return None

    def set_version(self, version: int) -> None:
        return None

    def spawn(self, state: Any, *, detach: bool = False) -> Learner:
        return self  # type: ignore[return-value]


def test_a_failing_challenger_is_counted_and_the_served_stream_loses_nothing() -> None:
    settings = _settings(models={"good": {"name": "LogisticRegression"}, "bad": {"name": "GaussianNB"}})
    learners = learners_from_settings(settings)
    assert isinstance(learners, dict)
    learners["bad"] = Broken()  # type: ignore[assignment]
    proc, writer, reg = _pipeline(settings, learners)
    res = proc.process(_records(300, seed=2))
    assert (res.predicted, res.learned, res.dead_lettered) == (300, 300, 0)
    assert len(_served(writer)) == 300 and not [r for r in writer.records if r[0] == "dlq"]
    value = reg.get_sample_value
    assert value("driftline_challenger_errors_total", {"model": "bad", "stage": "predict"}) == 300
    assert value("driftline_challenger_errors_total", {"model": "bad", "stage": "learn"}) == 300
    assert value("driftline_labeled_events_total", {"model": "good"}) == 300
    assert value("driftline_labeled_events_total", {"model": "bad"}) == 0
    assert proc.champion.name == "good"


def test_manual_promotion_is_audited_and_counted() -> None:
    proc, writer, reg = _pipeline(_settings(promotion={"schedule": "window", "min_events": 100_000}))
    proc.process(_records(50, seed=3))
    done = proc.promote("strong", by="http")
    assert (done.previous, done.champion, done.reason) == ("weak", "strong", "manual")
    audit = [json.loads(v or b"") for t, _, v, _ in writer.records if t == "audit"]
    assert audit[-1]["type"] == "promotion" and audit[-1]["by"] == "http" and audit[-1]["to"] == "strong"
    assert reg.get_sample_value("driftline_promotions_total", {"model": "strong", "reason": "manual"}) == 1
    with pytest.raises(KeyError, match="no model named 'nope'"):
        proc.promote("nope")
    single, _, _ = _pipeline(Settings())
    with pytest.raises(ValueError, match="needs several models"):
        single.promote("LogisticRegression")


@pytest.mark.parametrize(("config", "message"), [
    ({"model": {"name": "GaussianNB"}, **WEAK_STRONG}, "not both"),
    ({"models": {"only": {"name": "GaussianNB"}}}, "2 to 16"),
    ({"models": {"a b": {"name": "GaussianNB"}, "c": {"name": "GaussianNB"}}}, "invalid name"),
    ({"models": {"served": {"name": "GaussianNB"}, "c": {"name": "GaussianNB"}}}, "invalid name"),
    ({"models": {"a": {"name": "GaussianNB", "serving": True}, "c": {"name": "GaussianNB", "serving": True}}},
     "one model serves"),
    ({"models": {"a": {"name": "GaussianNB"}, "r": {"name": "LinearRegression", "task": "regression"}}},
     "one task"),
    ({**WEAK_STRONG, "sync": {"mode": "average"}}, "does not yet decide promotions"),
    ({"models": {"a": {"name": "LinearRegression", "task": "regression"},
                 "b": {"name": "LinearRegression", "task": "regression"}}, "promotion": {"schedule": "sequential"}},
     "sequential is for classification"),
])
def test_invalid_model_sets_are_refused_with_the_reason(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**config)


def test_the_serving_flag_picks_the_champion_and_model_is_the_serving_config() -> None:
    s = Settings(models={"a": {"name": "GaussianNB"}, "b": {"name": "LogisticRegression", "serving": True}})
    assert s.serving_model == "b" and s.model.name == "LogisticRegression"
    assert Settings(**WEAK_STRONG).serving_model == "weak"


def test_models_on_one_backbone_config_share_one_forward_per_batch(tmp_path: Any) -> None:
    from driftline.learners.embedding import BackboneRiverLearner
    from driftline.stream.sources import from_generator
    from tests.tiny_models import AGRAWAL_NUMERIC, save_encoder, torch_backbone

    backbone = torch_backbone(save_encoder(tmp_path))
    settings = Settings(models={
        "lr": {"name": "LogisticRegression", "backbone": backbone},
        "nb": {"name": "GaussianNB", "backbone": backbone},
        "raw": {"name": "GaussianNB"}},
        promotion={"schedule": "window"})
    learners = learners_from_settings(settings)
    assert isinstance(learners, dict)
    lr, nb = learners["lr"], learners["nb"]
    assert isinstance(lr, BackboneRiverLearner) and isinstance(nb, BackboneRiverLearner)
    assert nb.backbone is lr.backbone  # one loaded backbone
    calls = []
    real = lr.backbone.embed
    lr.backbone.embed = lambda events: (calls.append(len(events)), real(events))[1]  # type: ignore[method-assign]
    proc, _, _ = _pipeline(settings, learners)
    events = [{"id": f"a{i}", "features": {k: float(v) for k, v in e["features"].items() if k in AGRAWAL_NUMERIC},
               "label": e["label"]}
              for i, e in enumerate(itertools.islice(from_generator("Agrawal", seed=1, id_prefix="a"), 200))]
    recs = [InboundRecord("in", 0, i, 0, None, orjson.dumps(e)) for i, e in enumerate(events)]
    proc.process(recs[:100])
    proc.process(recs[100:])
    assert calls == [100, 100]  # one forward per batch for lr and nb together
    # and sharing changes nothing: a model alone on its own backbone learns the same
    solo = learners_from_settings(Settings(model={"name": "GaussianNB", "backbone": backbone}))
    assert not isinstance(solo, dict)
    for e in events:
        ev = Event.model_validate(e)
        solo.learn_one(ev, ev.label)  # type: ignore[arg-type]
    probe = Event.model_validate(events[0])
    shared, alone = nb.predict_one(probe), solo.predict_one(probe)  # (one batched forward vs one per event:
    assert shared.value == alone.value and shared.proba == pytest.approx(alone.proba, abs=1e-6)  # float32 rounding)
    # a model whose adaptation changes its backbone in place (adabn) loads its own
    from driftline.learners.factory import build_learners

    own = build_learners({"lr": settings.models["lr"].model(), "nb": settings.models["nb"].model()},
                         exclusive={"nb"})
    assert own["nb"].backbone is not own["lr"].backbone  # type: ignore[attr-defined]


def test_each_model_has_its_own_detectors_and_their_series() -> None:
    settings = _settings(drift={"detectors": [{"name": "ADWIN"}]},
                         models={"weak": {"name": "dummy.PriorClassifier"},
                                 "strong": {"name": "LogisticRegression",
                                            "drift": {"detectors": [{"name": "PageHinkley"}]}}})
    proc, _, reg = _pipeline(settings)
    value = reg.get_sample_value
    assert value("driftline_drift_detections_total", {"model": "weak", "detector": "ADWIN", "level": "drift"}) == 0
    assert value("driftline_drift_detections_total",
                 {"model": "strong", "detector": "PageHinkley", "level": "drift"}) == 0
    assert value("driftline_drift_detections_total", {"model": "strong", "detector": "ADWIN", "level": "drift"}) \
        is None  # its own drift section replaces the top-level one
    from driftline.stream.observers import ErrorDrift

    weak, strong = proc.lane("weak").find(ErrorDrift), proc.lane("strong").find(ErrorDrift)
    assert weak is not None and strong is not None and weak.monitor is not strong.monitor
