"""Continual learning on streams through the Continual learner: forgetting, accuracy, and Avalanche's cost.

Data: scikit-learn's bundled digits (1,797 8x8 images, pixels scaled to [0, 1]), 70/30 train/test per
class with a fixed seed.

- class-incremental: five experiences of two classes each (0/1, 2/3, ..., 8/9), streamed in that order;
- domain-incremental: the same ten classes under four fixed pixel permutations (the first is the identity),
  one domain after another.

Each strategy (Naive, Replay, EWC, LwF, AGEM) gets the same stream through the product's learner
(`model.name: Continual`, MLP head of 128 units, windows of 128 labeled events, 5 epochs per window,
mini-batches of 32, Adam 1e-3; trained synchronously, so the numbers do not depend on timing). Every event
is predicted before it is learned. After each experience the model is scored on the held-out test sets of
all experiences so far. Printed per stream and strategy: final average accuracy over all experiences,
average forgetting (best accuracy an experience ever had minus its final one, over all but the last), and
events/s of the whole test-then-train stream.

Framework overhead: the same learner and stream with its windows trained by a plain torch loop doing
Replay's updates (same net and optimizer, windows, epochs, mini-batches of 32 current + 32 memory examples,
an experience-balanced memory of the same size) instead of Avalanche's Replay; everything else (events,
predictions, weight swaps) is the same code. ``overhead_ratio`` = Replay events/s through Avalanche / plain
torch events/s (1.0: no overhead).

Last line: one JSON object with ``naive_acc``, ``replay_acc``, ``ewc_acc``, ``lwf_acc``, ``agem_acc`` (class-
incremental final average accuracy), their domain-incremental counterparts (``*_domain_acc``),
``replay_eps``, ``plain_torch_eps``, ``overhead_ratio``.

    python benchmarks/continual.py [--seed 0] [--epochs 5] [--window 128]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

from driftline.core import Event
from driftline.learners.continual import ContinualLearner
from driftline.learners.factory import build_learner
from driftline.learners.training_worker import Window
from driftline.settings import ModelSettings

FEATURES = [f"p{i}" for i in range(64)]
STRATEGIES: dict[str, dict[str, Any]] = {
    "Naive": {}, "Replay": {"mem_size": 200}, "EWC": {"ewc_lambda": 1000.0, "mode": "separate"},
    "LwF": {"alpha": 1.0, "temperature": 2.0}, "AGEM": {"patterns_per_exp": 64, "sample_size": 64},
}
BATCH = 64  # consumed batch size (prepare + predict together, as the service does)


@dataclass
class Split:
    train: list[tuple[np.ndarray, int]]
    test: list[tuple[np.ndarray, int]]


def _experiences(seed: int) -> dict[str, list[Split]]:
    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        cut = int(len(idx) * 0.7)
        train += [(x[i], c) for i in idx[:cut]]
        test += [(x[i], c) for i in idx[cut:]]
    order = random.Random(seed)
    class_inc = []
    for pair in ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)):
        tr = [s for s in train if s[1] in pair]
        order.shuffle(tr)
        class_inc.append(Split(tr, [s for s in test if s[1] in pair]))
    domain_inc = []
    for d in range(4):
        perm = np.arange(64) if d == 0 else rng.permutation(64)
        tr = [(v[perm], c) for v, c in train]
        order.shuffle(tr)
        domain_inc.append(Split(tr, [(v[perm], c) for v, c in test]))
    return {"class-incremental": class_inc, "domain-incremental": domain_inc}


def _events(samples: list[tuple[np.ndarray, int]], prefix: str) -> list[Event]:
    return [Event(id=f"{prefix}{i}", features=dict(zip(FEATURES, map(float, v), strict=True)), label=int(c))
            for i, (v, c) in enumerate(samples)]


def _config(strategy: str, params: dict[str, Any], args: argparse.Namespace) -> ModelSettings:
    return ModelSettings(name="Continual", scale=False, seed=args.seed,
                         backbone={"kind": "identity", "features": FEATURES, "device": "cpu"},
                         params={"strategy": strategy, "strategy_params": params, "hidden": 128, "lr": 1e-3,
                                 "window_events": args.window, "train_epochs": args.epochs, "train_mb_size": 32,
                                 "synchronous": True, "max_classes": 10})


def _accuracy(learner: ContinualLearner, events: list[Event]) -> float:
    learner.prepare_batch(events)
    preds = learner.predict_many(events)
    return sum(p.value == e.label for p, e in zip(preds, events, strict=True)) / len(events)


@dataclass
class Result:
    final: list[float] = field(default_factory=list)  # per experience, after the last
    best: list[float] = field(default_factory=list)
    seconds: float = 0.0
    events: int = 0

    @property
    def acc(self) -> float:
        return float(np.mean(self.final))

    @property
    def forgetting(self) -> float:
        if len(self.final) < 2:
            return 0.0
        return float(np.mean([b - f for b, f in zip(self.best[:-1], self.final[:-1], strict=True)]))


def run_learner(exps: list[Split], strategy: str, params: dict[str, Any], args: argparse.Namespace, *,
                train_fn: Callable[[Window], None] | None = None,
                holder: dict[str, ContinualLearner] | None = None) -> Result:
    torch.manual_seed(args.seed)
    learner = build_learner(_config(strategy, params, args))
    assert isinstance(learner, ContinualLearner)
    if train_fn is not None and holder is not None:
        holder["learner"] = learner
        learner.worker.train_fn = train_fn
    return run_experiences(learner, [(_events(e.train, f"e{i}-"), _events(e.test, f"t{i}-"))
                                     for i, e in enumerate(exps)])


def run_experiences(learner: ContinualLearner, exps: Sequence[tuple[list[Event], list[Event]]]) -> Result:
    """Each experience's (training, test) events in order: the training stream test-then-train in consumed
    batches (the last, partial window trained at the end), then every experience so far scored on its test set.
    Closes the learner."""
    res = Result(best=[0.0] * len(exps))
    for i, (stream, _) in enumerate(exps):
        t0 = time.perf_counter()
        for j in range(0, len(stream), BATCH):
            chunk = stream[j:j + BATCH]
            learner.prepare_batch(chunk)
            learner.predict_many(chunk)
            for e in chunk:
                learner.learn_one(e, e.label)  # type: ignore[arg-type]
        if i == len(exps) - 1:
            learner.drain()  # the last, partial window
        res.seconds += time.perf_counter() - t0
        res.events += len(stream)
        for k in range(i + 1):
            res.best[k] = max(res.best[k], _accuracy(learner, exps[k][1]))
    res.final = [_accuracy(learner, test) for _, test in exps]
    learner.close()
    return res


def run_plain_replay(exps: list[Split], mem_size: int, args: argparse.Namespace) -> Result:
    """Replay's updates without Avalanche: the same learner (events, windows, predictions, weight swaps), its
    windows trained by a plain torch loop instead of the strategy: same net and optimizer, epochs,
    mini-batches of 32 window + 32 memory examples, an experience-balanced memory of the same size."""
    gen = torch.Generator().manual_seed(args.seed)
    memory: list[tuple[torch.Tensor, torch.Tensor]] = []  # one (x, y) per past window
    loss_fn = torch.nn.CrossEntropyLoss()
    holder: dict[str, ContinualLearner] = {}

    def plain(w: Window) -> None:
        learner = holder["learner"]
        net, opt = learner.strategy.model, learner.strategy.optimizer
        xw, yw = torch.stack(w.xs).float(), torch.tensor(w.ys)
        mx = torch.cat([m[0] for m in memory]) if memory else None
        my = torch.cat([m[1] for m in memory]) if memory else None
        net.train()
        for _ in range(args.epochs):
            order = torch.randperm(len(xw), generator=gen)
            for s in range(0, len(xw), 32):
                idx = order[s:s + 32]
                bx, by = xw[idx], yw[idx]
                if mx is not None and my is not None:
                    m = torch.randint(len(mx), (32,), generator=gen)
                    bx, by = torch.cat([bx, mx[m]]), torch.cat([by, my[m]])
                opt.zero_grad(set_to_none=True)
                loss_fn(net(bx), by).backward()
                opt.step()
        memory.append((xw, yw))
        per = max(mem_size // len(memory), 1)
        for k, (mxk, myk) in enumerate(memory):
            if len(mxk) > per:
                keep = torch.randperm(len(mxk), generator=gen)[:per]
                memory[k] = (mxk[keep], myk[keep])
        learner._publish(w)

    return run_learner(exps, "Naive", {}, args, train_fn=plain, holder=holder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--window", type=int, default=256, help="events per window/experience (product default 256)")
    args = ap.parse_args()
    logging.captureWarnings(True)  # as the service: Avalanche's per-experience self-deprecation is not news
    logging.getLogger("py.warnings").addFilter(lambda r: "Call to deprecated function update" not in r.getMessage())
    streams = _experiences(args.seed)
    out: dict[str, Any] = {}
    for name, exps in streams.items():
        print(f"\n{name}: {len(exps)} experiences, {sum(len(e.train) for e in exps)} training events, "
              f"windows of {args.window}")
        print(f"  {'strategy':<12} {'final acc':>9} {'forgetting':>10} {'events/s':>9}")
        for strategy, params in STRATEGIES.items():
            r = run_learner(exps, strategy, params, args)
            print(f"  {strategy:<12} {r.acc:>9.3f} {r.forgetting:>10.3f} {r.events / r.seconds:>9.0f}")
            key = strategy.lower() + ("_acc" if name == "class-incremental" else "_domain_acc")
            out[key] = round(r.acc, 4)
    exps = streams["class-incremental"]
    print("\nframework overhead (class-incremental stream: Replay through Avalanche vs its updates in plain torch)")
    print(f"  {'window':>6} {'avalanche ev/s':>14} {'plain ev/s':>10} {'ratio':>6} {'acc':>6} {'plain acc':>9}")
    ratios = {}
    for window in sorted({128, 256, 512, 1024, args.window}):
        wargs = argparse.Namespace(**{**vars(args), "window": window})
        r = run_learner(exps, "Replay", STRATEGIES["Replay"], wargs)
        plain = run_plain_replay(exps, STRATEGIES["Replay"]["mem_size"], wargs)
        eps, plain_eps = r.events / r.seconds, plain.events / plain.seconds
        ratios[window] = round(eps / plain_eps, 3)
        print(f"  {window:>6} {eps:>14.0f} {plain_eps:>10.0f} {eps / plain_eps:>6.2f} {r.acc:>6.3f} {plain.acc:>9.3f}")
        if window == args.window:
            out["replay_eps"], out["plain_torch_eps"] = round(eps, 1), round(plain_eps, 1)
            out["plain_torch_replay_acc"] = round(plain.acc, 4)
    out["overhead_ratio"] = ratios[args.window]
    out["overhead_ratio_by_window"] = ratios
    print()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
