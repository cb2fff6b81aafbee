"""One model in the pipeline with the observers that watch it alone (a lane), and what several lanes share.

A configuration with one model has one lane. With ``models`` (champion and challengers) every model has its
own lane: its learner, and its own quality tracker, ledger, drift detectors, adaptation ladder and detection
log; the processor predicts and learns every event in every lane, publishes the champion's prediction, and
hands each lane's loss to the race (`adapters.promotion.Race`) that decides who is the champion.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from driftline.adapters.detectors import Detection
from driftline.core import Event, Label, Task
from driftline.learners.base import Learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.stream.observers import BatchResult, Labeled, Observer, Predicted

ObserverT = TypeVar("ObserverT", bound=Observer)

log = logging.getLogger(__name__)


class Lane:
    """A named model and its own observers (hooks of the base class, which do nothing, are not called)."""

    def __init__(self, name: str, learner: Learner, observers: Sequence[Observer], metrics: ServiceMetrics) -> None:
        self.name = name
        self.learner = learner
        self.observers = list(observers)
        self.on_predicted: list[Callable[[Predicted], Sequence[Detection]]] = [
            o.on_predicted for o in observers if type(o).on_predicted is not Observer.on_predicted]
        self.on_learned: list[Callable[[Labeled], Sequence[Detection]]] = [
            o.on_learned for o in observers if type(o).on_learned is not Observer.on_learned]
        self.learned = LearnedBatch(observers)  # this batch's learned events, for on_learned_batch at its end
        self.on_detection: list[Callable[[Detection, Event], None]] = [
            o.on_detection for o in observers if type(o).on_detection is not Observer.on_detection]
        self.on_batch_end: list[Callable[[BatchResult], None]] = [
            o.on_batch_end for o in observers if type(o).on_batch_end is not Observer.on_batch_end]
        self.predict_times: list[float] = []  # this batch's latencies, observed at its end
        self.learn_times: list[float] = []
        self.predict_hist = metrics.predict_latency.labels(name)
        self.learn_hist = metrics.learn_latency.labels(name)
        self.prepare_hist = metrics.prepare_latency.labels(name)

    def prepare(self, events: list[Event]) -> None:
        """Let the model embed the whole batch at once (a speed-up: on failure it goes event by event)."""
        t0 = time.perf_counter()
        try:
            self.learner.prepare_batch(events)
        except Exception as exc:
            log.warning("batch preparation of %d events for model %s failed (%r); preparing them one at a time",
                        len(events), self.name, exc)
            return
        self.prepare_hist.observe(time.perf_counter() - t0)

    def find(self, kind: type[ObserverT]) -> ObserverT | None:
        return next((o for o in self.observers if isinstance(o, kind)), None)

    def detected(self, detections: Sequence[Detection], event: Event) -> None:
        for d in detections:
            for hook in self.on_detection:
                hook(d, event)

    def observe_latencies(self) -> None:
        self.predict_hist.observe_many(self.predict_times)
        self.learn_hist.observe_many(self.learn_times)
        self.predict_times.clear()
        self.learn_times.clear()

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"learner": self.learner.state_dict()}
        for obs in self.observers:
            if obs.key is not None:
                state[obs.key] = obs.state_dict()
        return state


class LearnedBatch:
    """A batch's learned events (``items``, in order), for the observers' `on_learned_batch` at its end."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.hooks = [o.on_learned_batch for o in observers
                      if type(o).on_learned_batch is not Observer.on_learned_batch]
        self.items: list[Labeled] = []

    def end(self) -> None:
        if self.items:
            for hook in self.hooks:
                hook(self.items)
            self.items = []


def loss(task: Task, label: Label | float, predicted: Any) -> float | None:
    """What the race compares: 0/1 (wrong) for classification, the absolute error for regression; None when
    there is no prediction to score."""
    if predicted is None:
        return None
    if task == "classification":
        # right as the quality tracker counts it: equal and of the same type (True is not 1)
        return 0.0 if predicted == label and type(predicted) is type(label) else 1.0
    try:
        return abs(float(label) - float(predicted))
    except (TypeError, ValueError):
        return None


def lane_named(lanes: Sequence[Lane], name: str) -> Lane:
    """The lane of the model ``name`` (KeyError naming the models)."""
    for lane in lanes:
        if lane.name == name:
            return lane
    raise KeyError(f"no model named {name!r}; the models are {', '.join(lane.name for lane in lanes)}")


def save_lanes(lanes: Sequence[Lane], race: Mapping[str, Any] | None) -> dict[str, Any]:
    """The models' part of a checkpoint: one model's state and its observers' at the top level (the format
    of every checkpoint before challengers), or each model's under ``lanes`` by name and the race's."""
    if race is None:
        return lanes[0].state_dict()
    return {"lanes": {lane.name: lane.state_dict() for lane in lanes}, "race": dict(race)}


def load_lanes(lanes: Sequence[Lane], state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """Restore what `save_lanes` saved into the same kind of pipeline (ValueError saying what differs); the
    race's state, with several models. A model the state has nothing for starts from its initial model."""
    if len(lanes) == 1:
        if "lanes" in state:
            raise ValueError(f"the state holds several models ({', '.join(state['lanes'])}) and this pipeline has "
                             "one: configure the same models")
        _load_lane(lanes[0], state)
        return None
    if "lanes" not in state:
        raise ValueError("the state holds one model and this pipeline has several (models: ...)")
    saved = state["lanes"]
    for lane in lanes:
        if lane.name in saved:
            _load_lane(lane, saved[lane.name])
    if fresh := [lane.name for lane in lanes if lane.name not in saved]:
        log.warning("the restored state has nothing for model(s) %s: they start from their initial model",
                    ", ".join(fresh))
    return state.get("race") or {}


def _load_lane(lane: Lane, state: Mapping[str, Any]) -> None:
    lane.learner.load_state_dict(state["learner"])
    for obs in lane.observers:
        if obs.key is not None and state.get(obs.key):
            obs.load_state_dict(_upgraded(state, obs.key))


def _upgraded(state: Mapping[str, Any], key: str) -> Any:
    """An observer's entry, upgraded from older checkpoints (before 0.2 the predicted count was top-level)."""
    entry = state[key]
    if key == "ledger" and "predicted_total" not in entry:
        return {**entry, "predicted_total": state.get("predicted_total", 0)}
    return entry
