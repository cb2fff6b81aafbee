"""Every adaptation policy through the same checks, on every learner kind it supports: it acts at a
drift, bumps the model version, is audited and counted, its adapter state round-trips, and it changes
the model the way it claims (per-policy checks below). Policies that cannot apply to a learner are
refused at start-up with a ConfigError that names the rung.

The stream: two features in [0, 1]; concept A labels x0 > x1, concept B the opposite (an abrupt
concept flip); domain B also shifts the inputs by +3 (so AdaBN and adversarial adaptation have a
covariate shift to adapt to). Domain C is B's inputs with A's concept (a pure covariate shift).
"""

from __future__ import annotations

import pickle
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from prometheus_client import CollectorRegistry

from driftline.adapters.adaptation import Adapter
from driftline.adapters.detectors import DRIFT, WARNING, Detection
from driftline.adapters.policies import POLICIES
from driftline.core import Event
from driftline.errors import ConfigError
from driftline.learners.base import Learner
from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import DriftSettings, ModelSettings
from tests.tiny_models import save_bn_encoder

SHIFT = 3.0


def stream(concept: str, n: int, seed: int, start: int = 0) -> Iterator[Event]:
    rng = random.Random(seed)
    for i in range(n):
        x0, x1 = rng.random(), rng.random()
        y = int(x0 <= x1) if concept == "B" else int(x0 > x1)
        off = SHIFT if concept in "BC" else 0.0
        yield Event(id=f"{concept}{start + i}", features={"x0": x0 + off, "x1": x1 + off}, label=y)


@pytest.fixture(scope="module")
def bn_path() -> Path:
    return _bn_for_cases()


def river(_: Path) -> ModelSettings:
    return ModelSettings(name="LogisticRegression", classes=[0, 1], seed=3)


def torch_mlp(bn: Path) -> ModelSettings:
    return ModelSettings(name="TorchMLP", classes=[0, 1], seed=3, params={"hidden": 16, "lr": 0.02},
                         backbone={"kind": "torch", "path": str(bn), "class_path": "tests.tiny_models:BNEncoder",
                                   "args": {"in_dim": 2, "out_dim": 8}, "features": ["x0", "x1"], "device": "cpu"})


def torch_plain(_: Path) -> ModelSettings:
    return ModelSettings(name="TorchMLP", classes=[0, 1], seed=3, params={"hidden": 16, "lr": 0.02},
                         backbone={"features": ["x0", "x1"], "device": "cpu"})


LEARNERS = {"river": river, "torch_mlp": torch_mlp, "torch_plain": torch_plain}
LABEL_FREE = {name for name, cls in POLICIES.items() if not cls.needs_labels}


def _accepts(policy: str, kind: str) -> bool:
    """Whether ``policy`` accepts this learner kind (its start-up check), building the learner to ask it."""
    cfg = LEARNERS[kind](_bn_for_cases())
    try:
        POLICIES[policy]({}, "drift.policies[0]").check(build_learner(cfg))
    except ConfigError:
        return False
    return True


def _bn_for_cases() -> Path:
    global _BN
    if _BN is None:
        src = torch.tensor([[e.features["x0"], e.features["x1"]] for e in stream("A", 2000, 99)], dtype=torch.float32)
        _BN = save_bn_encoder(Path(tempfile.mkdtemp(prefix="driftline-policy-contract-")), 2, 8, fit_on=src)
    return _BN


_BN: Path | None = None
# every registered policy (a policy registered in a test included), on every learner kind it accepts
CASES = [(p, k) for p in POLICIES for k in LEARNERS if _accepts(p, k)]
REFUSED = [(p, k) for p in POLICIES for k in LEARNERS if (p, k) not in CASES]


class Harness:
    def __init__(self, learner: Learner, policies: list[dict[str, Any]], **drift: Any) -> None:
        self.learner = learner
        self.records: list[dict[str, Any]] = []
        self.registry = CollectorRegistry()
        self.metrics = ServiceMetrics(self.registry, model=learner.name, task=learner.task)
        self.cfg = DriftSettings(policies=policies, **drift)
        self.adapter = Adapter(learner, self.cfg, seed=5, metrics=self.metrics, emit=self.records.append)
        self.correct: list[bool] = []

    def feed(self, events: Iterator[Event]) -> None:
        for e in events:
            pred = self.learner.predict_one(e).value
            self.adapter.observe_input(e)
            assert e.label is not None
            self.learner.learn_one(e, e.label)
            self.correct.append(pred == e.label)
            self.adapter.observe_labeled(e, e.label, pred)

    def count(self, detector: str, action: str) -> float:
        v = self.registry.get_sample_value("driftline_adaptations_total",
                                           {"model": self.learner.name, "detector": detector, "action": action})
        return v or 0.0


def detection(level: str = DRIFT, source: str = "error", since: int | None = None) -> Detection:
    return Detection("ADWIN" if source == "error" else "KS", level, 0, 0.5, 0.5, since, source)


def accuracy(learner: Learner, events: list[Event]) -> float:
    return sum(learner.predict_one(e).value == e.label for e in events) / len(events)


@pytest.mark.parametrize(("policy", "kind"), CASES)
def test_policy_acts_is_audited_counted_and_round_trips(policy: str, kind: str, bn_path: Path) -> None:
    learner = build_learner(LEARNERS[kind](bn_path))
    on = "input" if policy in LABEL_FREE else "error"
    params: dict[str, Any] = {"min_learned": 10} if policy == "background" else {}
    h = Harness(learner, [{"name": policy, "params": params, "on": on}], guard={"window": 50})
    h.feed(stream("A", 600, 1))
    if policy == "background":
        h.adapter.on_detection(detection(WARNING))
        assert h.adapter.background is not None
    h.feed(stream("B", 200, 2))
    version = learner.version
    h.adapter.on_detection(detection(source=on, since=150))
    acted = [r for r in h.records if r["action"] == policy]
    assert len(acted) == 1, h.records
    r = acted[0]
    assert (r["type"], r["model_version_before"], r["model_version_after"]) == ("adaptation", version, version + 1)
    assert learner.version == version + 1
    assert h.count(r["detector"], policy) == 1
    assert list(h.adapter.actions)[-1].action == policy
    # the adapter's state (windows, replay, ladder, running guard) round-trips
    twin = Harness(build_learner(LEARNERS[kind](bn_path)), [{"name": policy, "params": params, "on": on}],
                   guard={"window": 50})
    twin.learner.load_state_dict(learner.state_dict())
    twin.adapter.load_state_dict(pickle.loads(pickle.dumps(h.adapter.state_dict())))
    assert twin.adapter.guard is not None and twin.adapter.labeled == h.adapter.labeled
    probe = list(stream("B", 60, 3, start=10_000))
    h.feed(iter(probe))
    twin.feed(iter(probe))
    assert h.correct[-60:] == twin.correct[-60:]
    assert [x["action"] for x in h.records[-1:]] == [x["action"] for x in twin.records[-1:]]


def test_background_swaps_in_the_learner_started_at_the_warning(bn_path: Path) -> None:
    learner = build_learner(river(bn_path))
    h = Harness(learner, [{"name": "background", "params": {"min_learned": 10}}], guard={"window": 0})
    h.feed(stream("A", 500, 1))
    h.adapter.on_detection(detection(WARNING))
    h.feed(stream("B", 150, 2))
    bg = h.adapter.background
    assert bg is not None and bg.learned == 150
    probe = list(stream("B", 200, 4, start=5000))
    expected = [bg.learner.predict_one(e).value for e in probe]
    assert accuracy(learner, probe) < 0.5  # the active model still has concept A
    h.adapter.on_detection(detection())
    assert [learner.predict_one(e).value for e in probe] == expected
    assert accuracy(learner, probe) > 0.85
    assert h.adapter.background is None


def test_background_is_skipped_without_a_warning_and_the_next_rung_acts(bn_path: Path) -> None:
    h = Harness(build_learner(river(bn_path)), [{"name": "background"}, {"name": "reset"}])
    h.feed(stream("A", 300, 1))
    h.adapter.on_detection(detection())
    r = h.records[-1]
    assert r["action"] == "reset" and "background: no background learner" in r["details"]["skipped"][0]


def test_reset_relearns_only_what_came_after_the_change(bn_path: Path) -> None:
    learner = build_learner(river(bn_path))
    h = Harness(learner, [{"name": "reset", "params": {"min_events": 10}}], guard={"window": 0})
    h.feed(stream("A", 800, 1))
    after = list(stream("B", 120, 2))
    h.feed(iter(after))
    h.adapter.on_detection(detection(since=100))
    fresh = build_learner(river(bn_path))
    for e in after[-100:]:
        assert e.label is not None
        fresh.learn_one(e, e.label)
    probe = list(stream("B", 200, 4, start=5000))
    assert [learner.predict_one(e).proba for e in probe] == [fresh.predict_one(e).proba for e in probe]
    assert h.records[-1]["details"]["relearned"] == 100


def test_replay_burst_fine_tunes_on_recent_and_replayed_events(bn_path: Path) -> None:
    # (on the BN backbone, domain B's shifted inputs saturate the frozen embedding: nothing to fine-tune)
    learner = build_learner(torch_plain(bn_path))
    h = Harness(learner, [{"name": "replay_burst", "params": {"epochs": 3, "replay_ratio": 0.5}}],
                window=200, guard={"window": 0})
    h.feed(stream("A", 1500, 1))
    h.feed(stream("B", 200, 2))
    recent = [e for e, _ in h.adapter.recent]
    before, updates = log_loss(learner, recent), learner.updates
    h.adapter.on_detection(detection())
    d = h.records[-1]["details"]
    assert (d["recent"], d["replayed"], d["epochs"]) == (200, 100, 3)
    assert learner.updates == updates + 3 * 300
    assert log_loss(learner, recent) < before - 0.01  # it fitted the recent window (2/3 of what it trained on)


def log_loss(learner: Learner, events: list[Event]) -> float:
    import math

    total = 0.0
    for e in events:
        proba = learner.predict_one(e).proba or {}
        total -= math.log(max(proba.get(e.label, 0.0), 1e-12))  # type: ignore[arg-type]
    return total / len(events)


def test_adabn_re_estimates_the_norm_statistics_on_the_new_domain(bn_path: Path) -> None:
    learner = build_learner(torch_mlp(bn_path))
    h = Harness(learner, [{"name": "adabn", "on": "input"}], guard={"window": 0})
    h.feed(stream("A", 300, 1))
    h.feed(stream("B", 200, 2))
    backbone: Any = learner.backbone  # type: ignore[attr-defined]
    norm = backbone.norm_layers()[0]
    old_state = learner.state_dict()["norm"]
    h.adapter.on_detection(detection(source="input"))
    recent = torch.tensor([[e.features["x0"], e.features["x1"]] for e in list(h.adapter.inputs)])
    with torch.no_grad():
        pre = backbone.module.proj(recent)
    torch.testing.assert_close(norm.running_mean, pre.mean(0), rtol=1e-4, atol=1e-4)
    new_state = learner.state_dict()["norm"]
    assert not torch.allclose(new_state["0.running_mean"], old_state["0.running_mean"])
    # the norm statistics are part of the learner's state: loading the old state restores them
    learner.load_state_dict({**learner.state_dict(), "norm": old_state})
    torch.testing.assert_close(norm.running_mean, old_state["0.running_mean"])


def test_adversarial_aligns_the_domains_for_the_discriminator(bn_path: Path) -> None:
    learner = build_learner(torch_mlp(bn_path))
    h = Harness(learner, [{"name": "adversarial", "on": "input", "params": {"epochs": 4}}], guard={"window": 0})
    h.feed(stream("A", 600, 1))
    h.feed(stream("B", 300, 2))
    head_before = [p.detach().clone() for p in learner.head.parameters()]  # type: ignore[attr-defined]
    h.adapter.on_detection(detection(source="input"))
    d = h.records[-1]["details"]
    assert d["source"] >= 100 and d["target"] >= 100 and d["steps"] > 0
    assert d["domain_accuracy"] <= d["domain_accuracy_first_epoch"] + 0.05
    assert any(not torch.equal(a, b) for a, b in zip(head_before, learner.head.parameters(), strict=True))  # type: ignore[attr-defined]


def test_every_registered_policy_runs_on_some_learner() -> None:
    assert {p for p, _ in CASES} == set(POLICIES)


@pytest.mark.parametrize(("policy", "kind"), REFUSED)
def test_a_learner_a_policy_cannot_adapt_is_refused_at_start_up(policy: str, kind: str, bn_path: Path) -> None:
    on = "input" if policy in LABEL_FREE else "error"
    with pytest.raises(ConfigError, match=rf"drift.policies\[0\] \({policy}\): "):
        Harness(build_learner(LEARNERS[kind](bn_path)), [{"name": policy, "on": on}])


@pytest.mark.parametrize(("policy", "kind", "message"), [
    ("adabn", "river", "has no batch-norm layers"),
    ("adversarial", "river", "adversarial adaptation trains the head's representation"),
])
def test_policies_refuse_learners_they_cannot_adapt(policy: str, kind: str, message: str, bn_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"drift.policies\[0\] \({policy}\): .*{message}"):
        Harness(build_learner(LEARNERS[kind](bn_path)), [{"name": policy, "on": "input"}])


def test_labeled_policies_cannot_act_on_input_detections() -> None:
    with pytest.raises(ValueError, match="reset learns from labels and cannot act on input detections"):
        DriftSettings(policies=[{"name": "reset", "on": "input"}])


def test_unknown_policy_parameter_is_named(bn_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"drift.policies\[0\] \(reset\).params.epoch: unknown parameter"):
        Harness(build_learner(river(bn_path)), [{"name": "reset", "params": {"epoch": 2}}])
