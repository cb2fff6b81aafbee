"""The Continual learner: Avalanche strategies by name, windows off the caller's thread, atomic weight
swaps, back-pressure, pending windows in the state, growing classes, unfrozen backbone layers."""

from __future__ import annotations

import itertools
import pickle
import random
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from driftline.core import Event
from driftline.errors import ConfigError
from driftline.learners.continual import ContinualLearner
from driftline.learners.factory import build_learner
from driftline.learners.strategies import STRATEGIES
from driftline.learners.training_worker import TrainingError, TrainingWorker, Window
from driftline.settings import ModelSettings
from driftline.stream.sources import from_generator
from tests.tiny_models import AGRAWAL_NUMERIC, save_stack

FEATURES = {"kind": "identity", "features": AGRAWAL_NUMERIC}


def _events(n: int, seed: int = 1, function: int = 0) -> list[Event]:
    src = from_generator("Agrawal", params={"classification_function": function}, seed=seed, id_prefix=f"{seed}-")
    return [Event.model_validate(e) for e in itertools.islice(src, n)]


def _learner(**params: Any) -> ContinualLearner:
    base: dict[str, Any] = {"window_events": 50, "hidden": 16, "synchronous": True, "lr": 0.01}
    cfg = ModelSettings(name="Continual", backbone=FEATURES, params={**base, **params}, seed=3)
    learner = build_learner(cfg)
    assert isinstance(learner, ContinualLearner)
    return learner


def _feed(learner: ContinualLearner, events: list[Event], batch: int = 50) -> list[Any]:
    preds = []
    for i in range(0, len(events), batch):
        chunk = events[i:i + batch]
        learner.prepare_batch(chunk)
        for e in chunk:
            preds.append(learner.predict_one(e).value)
            assert e.label is not None
            learner.learn_one(e, e.label)
    return preds


def test_unknown_strategy_and_parameters_are_config_errors_listing_valid_ones() -> None:
    with pytest.raises(ConfigError) as err:
        _learner(strategy="Reply")
    assert "unknown Avalanche strategy 'Reply'" in str(err.value)
    assert all(name in str(err.value) for name in ("Naive", "Replay", "EWC", "LwF", "AGEM", "GDumb"))
    with pytest.raises(ConfigError, match=r"strategy_params.mem_sz: unknown parameter \(valid for Replay: mem_size\)"):
        _learner(strategy="Replay", strategy_params={"mem_sz": 10})
    with pytest.raises(ConfigError, match=r"model.params.window_event: unknown parameter"):
        _learner(window_event=10)
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown regression model 'Continual'"):
        ModelSettings(name="Continual", task="regression", backbone=FEATURES)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_learns_and_round_trips_its_state(strategy: str) -> None:
    events = _events(400)
    a = _learner(strategy=strategy)
    _feed(a, events[:300])
    assert a.version == 1 + 6 and a.updates == 300  # one swap per 50-event window
    state = pickle.loads(pickle.dumps(a.state_dict()))
    b = _learner(strategy=strategy)
    b.load_state_dict(state)
    assert _feed(a, events[300:]) == _feed(b, events[300:])
    assert a.version == b.version == 9


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_same_seed_same_model_whatever_the_global_random_generators_hold(strategy: str) -> None:
    """Strategies draw from Python's, numpy's and torch's global generators: the learner seeds them all per
    window, so two runs agree however the process left them."""
    events = _events(200) + _events(250, seed=2, function=6)
    runs = []
    for disturb in (1, 2):
        random.seed(disturb)
        np.random.seed(disturb)
        torch.manual_seed(disturb)
        learner = _learner(strategy=strategy, window_events=100)
        _feed(learner, events[:400])
        learner.prepare_batch(events[400:])
        runs.append([p.proba for p in learner.predict_many(events[400:])])
        if strategy == "AGEM":  # it picks each window's memory with random.shuffle (Python's generator)
            memory = next(p for p in learner.strategy.plugins if hasattr(p, "buffers")).buffers
            runs.append([torch.stack([m[i][0] for i in range(len(m))]).tolist() for m in memory])
        learner.close()
    assert runs[:len(runs) // 2] == runs[len(runs) // 2:]


def test_seeded_block_is_reproducible_and_leaves_the_generators_as_it_found_them() -> None:
    from driftline.learners.seeding import seeded

    def draws() -> tuple[float, float, float]:
        return random.random(), float(np.random.random()), float(torch.rand(1))

    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    before = draws()
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    with seeded(11):
        first = draws()
    assert draws() == before  # the outer sequences go on as if the block had not drawn
    random.seed(99)
    np.random.seed(99)
    with seeded(11):
        assert draws() == first


def test_raw_features_are_standardised_with_the_first_scale_warmup_events() -> None:
    """Identity backbone, model.scale on: the network standardises its input with the mean and sample standard
    deviation of the first `scale_warmup` labeled events (Agrawal's salaries are ~1e5, its ages ~50), and the
    statistics travel in the state."""
    events = _events(200)
    learner = _learner(scale_warmup=100)
    _feed(learner, events[:150])
    raw = torch.tensor([[e.features[f] for f in AGRAWAL_NUMERIC] for e in events[:100]], dtype=torch.float64)
    net = learner.strategy.model
    assert torch.allclose(net.mean.double(), raw.mean(0), rtol=1e-5)
    assert torch.allclose(net.std.double(), raw.std(0), rtol=1e-4)  # unbiased, as torch's default
    restored = _learner(scale_warmup=100)
    restored.load_state_dict(pickle.loads(pickle.dumps(learner.state_dict())))
    _feed(restored, events[150:])
    _feed(learner, events[150:])
    assert torch.equal(restored.strategy.model.mean, learner.strategy.model.mean)
    assert torch.equal(restored.strategy.model.std, learner.strategy.model.std)


def test_replay_remembers_what_naive_forgets() -> None:
    """Two concepts in turn: after the second, Replay still knows the first better than Naive."""
    first, second = _events(1500, seed=1, function=0), _events(1500, seed=2, function=6)
    test = _events(500, seed=9, function=0)
    accs = {}
    for strategy, params in (("Naive", {}), ("Replay", {"mem_size": 500})):
        learner = _learner(strategy=strategy, strategy_params=params, train_epochs=3)
        _feed(learner, first + second)
        learner.prepare_batch(test)
        accs[strategy] = sum(p.value == e.label for p, e in zip(learner.predict_many(test), test, strict=True)) / 500
    assert accs["Replay"] > accs["Naive"] + 0.02, accs


def test_training_runs_in_the_worker_and_published_weights_never_change() -> None:
    """Asynchronous mode: learn_one returns at once; a batch predicts with the version pinned when it was
    prepared, and a published network is never trained in place (no prediction sees half an update)."""
    learner = _learner(synchronous=False, window_events=100, train_epochs=30, max_pending_windows=100)
    events = _events(1000)
    probe = events[:64]
    learner.prepare_batch(probe)
    first = learner.predict_many(probe)
    pinned_net = learner._pinned[0]
    before = [t.clone() for t in pinned_net.state_dict().values()]
    t0 = time.perf_counter()
    for e in events:
        assert e.label is not None
        learner.learn_one(e, e.label)
    assert time.perf_counter() - t0 < 5.0  # 10 windows x 30 epochs are not trained in this thread
    assert learner.backlog() > 0
    seen_versions = set()
    while learner.backlog():
        assert [p.proba for p in learner.predict_many(probe)] == [p.proba for p in first]  # still pinned
        assert learner.version == 1
        seen_versions.add(learner._published[2])
        time.sleep(0.01)
    assert learner.drain(60)
    assert all(torch.equal(a, b) for a, b in zip(before, pinned_net.state_dict().values(), strict=True))
    assert learner._published[0] is not learner.strategy.model  # the one served is never the one trained
    learner.prepare_batch(probe)  # the next batch predicts with the newest version
    assert learner.version == 11 and learner.predict_many(probe) != first
    assert len(seen_versions) > 1  # swaps happened while we were predicting
    learner.close()


def _gated(window_events: int, max_pending: int) -> tuple[TrainingWorker, threading.Event, list[int]]:
    """A worker whose windows wait for the gate before they count as trained (their sizes, in order)."""
    gate = threading.Event()
    trained: list[int] = []

    def slow(w: Window) -> None:
        gate.wait(10)
        trained.append(len(w))

    return TrainingWorker(slow, window_events=window_events, window_seconds=60, max_pending=max_pending), gate, trained


def test_back_pressure_bounds_the_pending_windows() -> None:
    worker, gate, trained = _gated(window_events=10, max_pending=2)
    for i in range(10):
        worker.add(torch.zeros(1), i % 2)
    deadline = time.monotonic() + 10
    while worker._inflight is None and time.monotonic() < deadline:  # the worker took the first window
        time.sleep(0.01)
    for i in range(25):
        worker.add(torch.zeros(1), i % 2)
    assert not worker.saturated()  # 1 training, 2 pending, the open window not full yet
    for i in range(10):
        worker.add(torch.zeros(1), i % 2)
    # one window in training (blocked), two pending, the open one over-full: saturated, nothing lost
    assert worker.saturated() and worker.backlog() == 3 and worker.buffered() == 45
    gate.set()
    assert worker.drain(10)
    assert sum(trained) == 45 and not worker.saturated() and worker.backlog() == 0
    worker.close()


def _until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_between_windows_holds_the_next_window_until_the_snapshot_is_taken() -> None:
    """The poll loop asks before a save point: a window in training answers no, and the worker then starts no
    new window, so the next ask finds it between windows; `release` (the snapshot taken) lets training go on."""
    worker, gate, trained = _gated(window_events=5, max_pending=5)
    for i in range(15):
        worker.add(torch.zeros(1), i % 2)
    _until(lambda: worker._inflight is not None)
    assert not worker.between_windows()  # a snapshot now would wait for this window
    gate.set()
    _until(lambda: trained == [5])
    time.sleep(0.3)  # two windows are sealed: held, the worker takes neither
    assert trained == [5] and worker.backlog() == 2
    assert worker.between_windows()
    worker.release()
    _until(lambda: trained == [5, 5, 5])
    worker.close()


def test_a_hold_nobody_releases_ends_after_hold_seconds() -> None:
    trained: list[float] = []
    worker = TrainingWorker(lambda w: trained.append(time.monotonic()), window_events=5, window_seconds=60,
                            max_pending=5, hold_seconds=0.5)
    t0 = time.monotonic()
    assert worker.between_windows()  # nothing in training; the save point that asked then failed, say
    for i in range(5):
        worker.add(torch.zeros(1), i % 2)
    _until(lambda: len(trained) == 1)
    assert trained[0] - t0 >= 0.45
    worker.close()


def _gated_learner() -> tuple[ContinualLearner, threading.Event]:
    """An asynchronous learner (windows of 50) whose windows wait for the gate before they train."""
    gate = threading.Event()
    a = _learner(synchronous=False, window_events=50, max_pending_windows=10)
    train = a._train_window

    def held(w: Window) -> None:
        gate.wait(30)
        train(w)

    a.worker.train_fn = held
    return a, gate


def test_a_snapshot_between_windows_sees_the_held_window_pending_and_training_goes_on_after_release() -> None:
    a, gate = _gated_learner()
    _feed(a, _events(100))
    _until(lambda: a.worker._inflight is not None)
    assert not a.hold_between_windows()
    gate.set()
    _until(lambda: a.worker.trained_windows == 1)
    time.sleep(0.3)
    assert a.worker.trained_windows == 1 and a.hold_between_windows()
    state = a.state_dict()  # between windows: no wait; the second window is in it, pending
    assert state["experiences"] == 1 and [len(ys) for _, ys in state["pending"]] == [50]
    time.sleep(0.3)
    assert a.worker.trained_windows == 1  # still held: the save point is not over
    a.release_hold()
    _until(lambda: a.worker.trained_windows == 2)
    a.close()


def test_a_quiet_stream_trains_a_partial_window_after_window_seconds() -> None:
    trained: list[int] = []
    worker = TrainingWorker(lambda w: trained.append(len(w)), window_events=100, window_seconds=0.2, max_pending=2)
    for i in range(7):
        worker.add(torch.zeros(1), i)
    deadline = time.monotonic() + 10
    while not trained and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trained == [7]
    worker.close()


def test_a_failed_window_surfaces_in_the_feeding_thread() -> None:
    def boom(w: Window) -> None:
        raise RuntimeError("out of memory")

    worker = TrainingWorker(boom, window_events=2, window_seconds=60, max_pending=2)
    worker.add(torch.zeros(1), 0)
    worker.add(torch.zeros(1), 1)
    with pytest.raises(TrainingError, match="out of memory"):
        worker.drain(10)
    with pytest.raises(TrainingError):
        worker.add(torch.zeros(1), 0)


def test_pending_windows_travel_in_the_state_and_are_trained_after_restore() -> None:
    a, gate = _gated_learner()
    events = _events(230)
    _feed(a, events)
    # the worker waits on the gate holding the first window; a snapshot waits for it, so open the gate in
    # a moment: the state then has 1 window trained and 3 full + 1 partial pending (180 events)
    threading.Timer(0.3, gate.set).start()
    state = pickle.loads(pickle.dumps(a.state_dict()))
    assert sum(len(ys) for _, ys in state["pending"]) + 50 * (state["experiences"]) == 230
    b = _learner(synchronous=False, window_events=50, max_pending_windows=10)
    b.load_state_dict(state)
    assert b.drain(60) and a.drain(60)
    assert b.strategy.clock.train_exp_counter == a.strategy.clock.train_exp_counter
    probe = events[:20]
    a.prepare_batch(probe)
    b.prepare_batch(probe)
    assert b.version == a.version
    a.close()
    b.close()


def test_classes_grow_and_a_fixed_class_set_is_enforced() -> None:
    learner = _learner()
    events = _events(100)
    assert learner.predict_one(events[0]).value is None  # nothing trained yet: no class to predict
    for e in events[:50]:
        learner.learn_one(e, "spam" if e.label else "ham")
    assert set(learner.predict_one(events[0]).proba or {}) == {"ham", "spam"}
    for e in events[50:100]:
        learner.learn_one(e, "phish")  # a class appearing mid-stream
    assert set(learner.predict_one(events[0]).proba or {}) == {"ham", "spam", "phish"}
    fixed = build_learner(ModelSettings(name="Continual", backbone=FEATURES, classes=[0, 1],
                                        params={"synchronous": True}))
    from driftline.core import LabelError

    with pytest.raises(LabelError) as err:
        fixed.learn_one(events[0], 2)
    assert err.value.reason == "unknown_label"


def test_unfrozen_backbone_layers_train_and_checkpoint(tmp_path: Path) -> None:
    path = save_stack(tmp_path)
    backbone = {"kind": "torch", "path": str(path), "class_path": "tests.tiny_models:TinyStack",
                "args": {"in_dim": len(AGRAWAL_NUMERIC)}, "features": AGRAWAL_NUMERIC, "device": "cpu"}
    cfg = ModelSettings(name="Continual", backbone=backbone, seed=1,
                        params={"unfreeze_top_k": 1, "window_events": 50, "synchronous": True, "strategy": "EWC"})
    a = build_learner(cfg)
    assert isinstance(a, ContinualLearner)
    top_before = [t.clone() for t in a.strategy.model.top.parameters()]
    events = _events(300)
    _feed(a, events[:200])
    assert any(not torch.equal(x, y) for x, y in zip(top_before, a.strategy.model.top.parameters(), strict=True))
    b = build_learner(cfg)
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    assert _feed(a, events[200:]) == _feed(b, events[200:])
    with pytest.raises(ConfigError, match="unfreeze_top_k"):
        build_learner(ModelSettings(name="Continual", backbone=FEATURES, params={"unfreeze_top_k": 1}))


def test_drift_policies_are_refused_for_it() -> None:
    from driftline.adapters.adaptation import Adapter
    from driftline.settings import DriftSettings

    with pytest.raises(ConfigError, match=r"drift.policies: the Continual learner adapts with its Avalanche"):
        Adapter(_learner(), DriftSettings(policies=[{"name": "reset"}]), seed=1, metrics=None)  # type: ignore[arg-type]
