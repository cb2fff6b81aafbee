"""Drift detection and adaptation on River's synthetic streams with a known drift point.

Every scenario runs through the service's own pipeline (`EventProcessor` built from a config, as
`driftline run` and `driftline replay` build it), test-then-train, in consumed batches of 100, with
adaptation off (detectors only) and on (the ladder below), for seeds 1..5:

- abrupt: Agrawal classification function 0 -> 4, STAGGER concept 0 -> 2, at event 5,000 (two
  generators chained, not ConceptDriftStream with a tiny width);
- gradual: Hyperplane whose weights start moving at 5,000 (mag_change 0.005), RandomRBFDrift whose
  centroids start moving at 5,000 (change_speed 0.01); the concept at 5,000 is the one before it;
- recurring: Agrawal 0 -> 4 -> 0 with changes at 5,000 and 10,000;
- stationary: Agrawal function 0 for 100,000 events (adaptation off and on: every drift signal is a
  false alarm).

Model (``--model``): ``windowed`` (default), WindowedTreeClassifier (CART refit every 50 labeled events on
the last 1,000); ``hoeffding``, HoeffdingTreeClassifier (grace_period 50); both behind the default
preprocessing. Detector: ADWIN (delta 0.001) on
the prequential error stream (level ``drift`` only; ``improvement`` signals, a falling error, are not
alarms). Ladder: [reset (relearn what came after ADWIN's estimated change point), replay_burst].

Printed per scenario: detection delay (events from the drift point to the first drift signal after
it; median over seeds), false alarms (drift signals before the drift point, or anywhere on the
stationary stream), accuracy in the 2,000 events before and after the drift with adaptation off and
on, overall prequential accuracy off/on. Last line: one JSON object with

- ``adwin_delay_agrawal``: median delay on abrupt Agrawal;
- ``false_alarms_stationary``: drift signals on the stationary stream, total over seeds (adaptation on);
- ``recovery_ratio``: accuracy in drift+1,000..drift+2,000 / accuracy in the 1,000 events before the
  drift, adaptation on, median over the abrupt scenarios x seeds;
- ``acc_gain``: overall accuracy with adaptation minus without, mean over the drift scenarios.

    python benchmarks/drift.py [--seeds 5] [--quick] [--model windowed|hoeffding]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import Settings
from driftline.stream.observers import Adaptation, DetectionLog
from driftline.stream.pipeline import processor_from_settings
from driftline.stream.records import InboundRecord
from driftline.stream.replay import DEAD_LETTER_TOPIC, PREDICTIONS_TOPIC, CollectingWriter, PredictionLog
from driftline.stream.sink import OutputSink

DRIFT_AT = 5000
BATCH = 100
MODELS: dict[str, dict[str, Any]] = {
    "windowed": {"name": "WindowedTreeClassifier", "params": {"window": 1000, "refit_every": 50}},
    "hoeffding": {"name": "HoeffdingTreeClassifier", "params": {"grace_period": 50}},
}
INPUT = {"kind": "ks"}  # label-free, on the inputs: its signals are counted apart (input_alarms)
LADDER = [{"name": "reset"}, {"name": "replay_burst"}]


def _gen(name: str, seed: int, **kw: Any) -> Iterator[tuple[dict[str, Any], Any]]:
    from river.datasets import synth

    if name == "RandomRBFDrift":  # seeds its model (the concept) and its samples apart
        return iter(synth.RandomRBFDrift(seed_model=seed, seed_sample=seed + 1000, **kw))
    return iter(getattr(synth, name)(seed=seed, **kw))


def _chain(parts: Sequence[tuple[Iterator[tuple[dict[str, Any], Any]], int]]) -> Iterator[tuple[dict[str, Any], Any]]:
    for it, n in parts:
        yield from itertools.islice(it, n)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # abrupt | gradual | recurring | stationary
    drifts: tuple[int, ...]
    n: int
    make: Callable[[int], Iterator[tuple[dict[str, Any], Any]]]


def scenarios(stationary_n: int) -> list[Scenario]:
    def agrawal(seed: int) -> Iterator[tuple[dict[str, Any], Any]]:
        return _chain([(_gen("Agrawal", seed, classification_function=0), DRIFT_AT),
                       (_gen("Agrawal", seed + 100, classification_function=4), DRIFT_AT)])

    def stagger(seed: int) -> Iterator[tuple[dict[str, Any], Any]]:
        return _chain([(_gen("STAGGER", seed, classification_function=0), DRIFT_AT),
                       (_gen("STAGGER", seed + 100, classification_function=2), DRIFT_AT)])

    def hyperplane(seed: int) -> Iterator[tuple[dict[str, Any], Any]]:
        return _chain([(_gen("Hyperplane", seed, n_features=10, n_drift_features=5, mag_change=0.0), DRIFT_AT),
                       (_gen("Hyperplane", seed, n_features=10, n_drift_features=5, mag_change=0.005), DRIFT_AT)])

    def rbf(seed: int) -> Iterator[tuple[dict[str, Any], Any]]:
        return _chain([(_gen("RandomRBFDrift", seed, n_classes=2, n_features=10, n_centroids=20,
                             change_speed=0.0, n_drift_centroids=20), DRIFT_AT),
                       (_gen("RandomRBFDrift", seed, n_classes=2, n_features=10, n_centroids=20,
                             change_speed=0.01, n_drift_centroids=20), DRIFT_AT)])

    def recurring(seed: int) -> Iterator[tuple[dict[str, Any], Any]]:
        return _chain([(_gen("Agrawal", seed, classification_function=0), DRIFT_AT),
                       (_gen("Agrawal", seed + 100, classification_function=4), DRIFT_AT),
                       (_gen("Agrawal", seed + 200, classification_function=0), DRIFT_AT)])

    def stationary(seed: int) -> Iterator[tuple[dict[str, Any], Any]]:
        return _gen("Agrawal", seed, classification_function=0)

    return [
        Scenario("agrawal_0_4", "abrupt", (DRIFT_AT,), 2 * DRIFT_AT, agrawal),
        Scenario("stagger_0_2", "abrupt", (DRIFT_AT,), 2 * DRIFT_AT, stagger),
        Scenario("hyperplane", "gradual", (DRIFT_AT,), 2 * DRIFT_AT, hyperplane),
        Scenario("rbf_drift", "gradual", (DRIFT_AT,), 2 * DRIFT_AT, rbf),
        Scenario("agrawal_recurring", "recurring", (DRIFT_AT, 2 * DRIFT_AT), 3 * DRIFT_AT, recurring),
        Scenario("stationary", "stationary", (), stationary_n, stationary),
    ]


@dataclass
class Run:
    correct: list[bool]
    drifts: list[int]  # event index (0-based) of each drift signal of the error detector
    inputs: list[int]  # event index of each input (KS) drift signal
    actions: list[tuple[int, str]]
    wall_s: float


def run(scenario: Scenario, seed: int, adapt: bool, delta: float = 0.001, model: str = "windowed") -> Run:
    detectors = [{"name": "ADWIN", "params": {"delta": delta}}]
    settings = Settings(model={**MODELS[model], "seed": seed},
                        drift={"detectors": detectors, "policies": LADDER if adapt else [], "input": INPUT})
    learner = build_learner(settings.model)
    writer = CollectingWriter()
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    sink = OutputSink(writer, PREDICTIONS_TOPIC, DEAD_LETTER_TOPIC, metrics)
    predictions = PredictionLog(keep_values=True)
    proc = processor_from_settings(settings, learner, sink, metrics, labels_topic=None, extra=[predictions])
    labels: list[Any] = []
    t0 = time.perf_counter()
    stream = itertools.islice(scenario.make(seed), scenario.n)
    i = 0
    while batch := list(itertools.islice(stream, BATCH)):
        records = []
        for x, y in batch:
            y = int(y) if isinstance(y, bool) else y
            labels.append(y)
            body = {"id": f"e{i}", "features": {str(k): (float(v) if isinstance(v, int | float) else str(v))
                                                  for k, v in x.items()}, "label": y}
            records.append(InboundRecord("bench.events", 0, i, 1_700_000_000_000 + i, None, orjson.dumps(body)))
            i += 1
        proc.process(records)
    wall = time.perf_counter() - t0
    assert predictions.values is not None and len(predictions.values) == len(labels), "every event is predicted"
    correct = [p == y for p, y in zip(predictions.values, labels, strict=True)]
    log = proc.require(DetectionLog)
    drifts = [d.labeled - 1 for d in log.latest if d.level == "drift" and d.source == "error"]
    inputs = [d.labeled - 1 for d in log.latest if d.source == "input"]
    adaptation = proc.find(Adaptation)
    actions = [(a.labeled - 1, a.action) for a in adaptation.adapter.actions] if adaptation is not None else []
    return Run(correct, drifts, inputs, actions, wall)


def _acc(xs: Sequence[bool]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="a 20,000-event stationary stream (CI smoke)")
    ap.add_argument("--only", help="run only this scenario")
    ap.add_argument("--delta", type=float, default=0.001,
                    help="ADWIN's delta (River's default 0.002 gave 1 false alarm in 5 x 100k stationary events)")
    ap.add_argument("--model", choices=list(MODELS), default="windowed",
                    help="windowed: CART refit on the last 1,000 labeled events every 50; hoeffding: "
                         "HoeffdingTreeClassifier (grace_period 50)")
    args = ap.parse_args(argv)
    print(f"model: {MODELS[args.model]}")
    logging.getLogger("driftline").setLevel(logging.ERROR)
    seeds = range(1, args.seeds + 1)
    delays_agrawal: list[float] = []
    false_stationary = input_stationary = 0
    ratios: list[float] = []
    gains: list[float] = []
    print(f"{'scenario':<20}{'delay':>7}{'false':>7}{'before':>8}{'after off':>11}{'after on':>10}"
          f"{'overall off':>13}{'overall on':>12}{'actions':>9}{'KS':>5}{'s':>6}")
    for sc in scenarios(20_000 if args.quick else 100_000):
        if args.only and sc.name != args.only:
            continue
        delays, false, before, after_off, after_on, acc_off, acc_on, n_actions, wall, input_alarms = (
            [] for _ in range(10))
        for seed in seeds:
            off, on = run(sc, seed, False, args.delta, args.model), run(sc, seed, True, args.delta, args.model)
            input_alarms.append(len(on.inputs))
            wall.append(off.wall_s + on.wall_s)
            acc_off.append(_acc(off.correct))
            acc_on.append(_acc(on.correct))
            n_actions.append(len(on.actions))
            if not sc.drifts:
                false.append(len(on.drifts))
                continue
            first = sc.drifts[0]
            false.append(sum(1 for d in on.drifts if d < first))
            for at in sc.drifts:
                hits = [d - at for d in on.drifts if d >= at]
                if hits:
                    delays.append(hits[0])
            before.append(_acc(on.correct[first - 2000: first]))
            after_off.append(_acc(off.correct[first: first + 2000]))
            after_on.append(_acc(on.correct[first: first + 2000]))
            if sc.kind == "abrupt":
                ratios.append(_acc(on.correct[first + 1000: first + 2000]) / _acc(on.correct[first - 1000: first]))
        if sc.name == "agrawal_0_4":
            delays_agrawal = list(delays)
        if sc.kind == "stationary":
            false_stationary = sum(false)
            input_stationary = sum(input_alarms)
        else:
            gains.append(statistics.mean(acc_on) - statistics.mean(acc_off))

        def med(xs: list[float]) -> str:
            return f"{statistics.median(xs):.3f}" if xs else "-"

        print(f"{sc.name:<20}{(statistics.median(delays) if delays else float('nan')):>7.0f}{sum(false):>7d}"
              f"{med(before):>8}{med(after_off):>11}{med(after_on):>10}{med(acc_off):>13}{med(acc_on):>12}"
              f"{statistics.mean(n_actions):>9.1f}{sum(input_alarms):>5d}{sum(wall):>6.1f}", flush=True)
    result = {
        "adwin_delay_agrawal": statistics.median(delays_agrawal) if delays_agrawal else None,
        "false_alarms_stationary": false_stationary,
        "recovery_ratio": round(statistics.median(ratios), 4) if ratios else None,
        "acc_gain": round(statistics.mean(gains), 4) if gains else None,
        "input_false_alarms_stationary": input_stationary,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
