"""Images: does a real pretrained CNN transfer, does continual learning keep what it learned, and what does the
service cost per image?

The pretrained network is the MNIST CNN packaged in ``digit-recognizer-py`` (MIT; three conv blocks, then two
linear layers), the data scikit-learn's 1,797 8x8 digits as PNG ``image`` events, resized to 20x20 and padded to
28x28 with MNIST's normalisation, its penultimate layer (256 units) the embedding
(`driftline.testing.DIGITS_CNN_BACKBONE`). Nothing is downloaded.

(a) transfer, prequential (every image predicted before its label is learned), all 1,797 images in one seeded
    order, through the service's pipeline (records decoded from bytes, the processor `run` uses, consumed
    batches of 64). Pretrained: the frozen CNN's features + a River SoftmaxRegression head, the same + a torch
    linear head, the torch head with the last conv block and the dense layer fine-tuned. From scratch: the same
    CNN untrained (random weights, seeded) with every layer trained and a linear head, and River heads
    (SoftmaxRegression, LogisticRegression one-vs-rest) on the raw pixels. Printed: prequential accuracy over the
    first 100 / 300 / 1000 labels and "labels to 90%": the first event count at which the accuracy over the last
    200 events reaches 0.90 (never: 1,798); the same for 0.95.
(b) continual, class-incremental: five experiences of two digits (0/1, 2/3, ...; 70/30 train/test per class),
    streamed in order through the Continual learner on the frozen pretrained CNN (a 128-unit MLP head; windows
    of 128 labeled events, 5 epochs, Adam 1e-3, trained synchronously): final average accuracy over all five
    test sets and average forgetting, for Naive, Replay, EWC, LwF, AGEM and DER.
(c) images/s through the service on a real broker (frozen CNN + River SoftmaxRegression, every image labeled,
    librdkafka backend, from the first consumed batch to the last commit) vs the same learner in-process on the
    same images decoded beforehand (batched CNN forward per 64 images + the head's predict and learn per image).

Last line: one JSON object with ``labels_to_90_pretrained`` (best pretrained variant), ``labels_to_90_scratch_best``,
``replay_minus_naive`` (final accuracy, points), ``service_vs_backbone`` (c's ratio). Targets: pretrained
reaches 90% with at least 3x fewer labels than the best from-scratch variant; Replay >= Naive + 25 points;
service_vs_backbone >= 0.7.

    python benchmarks/vision.py [--seed 0] [--service-images 9000] [--skip-service]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from prometheus_client import CollectorRegistry

from driftline.core import Event
from driftline.learners.continual import ContinualLearner
from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import KafkaSettings, MetricsSettings, ModelSettings, Settings, TopicSettings
from driftline.stream.broker import kafka_cluster
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.kafka.publisher import publish
from driftline.stream.pipeline import processor_from_settings
from driftline.stream.records import InboundRecord
from driftline.stream.replay import DEAD_LETTER_TOPIC, PREDICTIONS_TOPIC, CollectingWriter, PredictionLog
from driftline.stream.sink import OutputSink
from driftline.testing import DIGITS_CNN_BACKBONE, digit_images

BATCH = 64
CNN = {**DIGITS_CNN_BACKBONE, "device": "cpu"}
PIXELS = {"kind": "pixels", "image": {"mode": "L", "resize": [8, 8]}, "device": "cpu"}
STRATEGIES: dict[str, dict[str, Any]] = {
    "Naive": {}, "Replay": {"mem_size": 200}, "EWC": {"ewc_lambda": 1000.0, "mode": "separate"},
    "LwF": {"alpha": 1.0, "temperature": 2.0}, "AGEM": {"patterns_per_exp": 64, "sample_size": 64},
    "DER": {"mem_size": 200, "alpha": 0.1, "beta": 0.5},
}


def _untrained_cnn(directory: Path, seed: int) -> dict[str, Any]:
    from digit_recognizer.model import CNN as Net

    torch.manual_seed(seed)
    path = directory / f"cnn-untrained-{seed}.pt"
    torch.save(Net().state_dict(), path)
    return {**CNN, "path": str(path)}


# -- (a) transfer ------------------------------------------------------------------------------------------
@dataclass
class Curve:
    name: str
    pretrained: bool
    correct: list[bool]
    seconds: float

    def at(self, n: int) -> float:
        return sum(self.correct[:n]) / n

    def labels_to(self, target: float = 0.90, window: int = 200) -> int:
        hits = 0
        for i, c in enumerate(self.correct):
            hits += c
            if i >= window:
                hits -= self.correct[i - window]
            if i + 1 >= window and hits / window >= target:
                return i + 1
        return len(self.correct) + 1


def prequential(name: str, model: dict[str, Any], images: list[dict[str, Any]], pretrained: bool) -> Curve:
    """The images through the processor `run` uses (decoded from record bytes), batches of 64."""
    settings = Settings(model=model)
    learner = build_learner(settings.model)
    metrics = ServiceMetrics(CollectorRegistry(), model=learner.name, task=learner.task)
    sink = OutputSink(CollectingWriter(), PREDICTIONS_TOPIC, DEAD_LETTER_TOPIC, metrics)
    log = PredictionLog(keep_values=True)
    proc = processor_from_settings(settings, learner, sink, metrics, labels_topic=None, extra=[log])
    t0 = time.perf_counter()
    for i in range(0, len(images), BATCH):
        proc.process([InboundRecord("vision", 0, j, 1_700_000_000_000 + j, None, orjson.dumps(images[j]))
                      for j in range(i, min(i + BATCH, len(images)))])
    seconds = time.perf_counter() - t0
    assert log.values is not None and len(log.values) == len(images), "every image is predicted"
    return Curve(name, pretrained, [v == e["label"] for v, e in zip(log.values, images, strict=True)], seconds)


def transfer(seed: int, workdir: Path) -> list[Curve]:
    images = digit_images(seed=seed)
    scratch_cnn = _untrained_cnn(workdir, seed)
    variants: list[tuple[str, dict[str, Any], bool]] = [
        ("frozen CNN + River SoftmaxRegression", {"name": "SoftmaxRegression", "backbone": CNN}, True),
        ("frozen CNN + torch linear head", {"name": "TorchLinear", "backbone": CNN, "params": {"lr": 1e-3}}, True),
        ("CNN, last conv block + dense layer fine-tuned", {"name": "TorchLinear", "backbone": CNN,
                                                          "params": {"lr": 1e-3, "unfreeze_top_k": 5,
                                                                     "backbone_lr": 1e-4}}, True),
        ("untrained CNN, every layer trained + linear", {"name": "TorchLinear", "backbone": scratch_cnn,
                                                        "params": {"lr": 1e-3, "unfreeze_top_k": 11,
                                                                   "backbone_lr": 1e-3}}, False),
        ("raw pixels + River SoftmaxRegression", {"name": "SoftmaxRegression", "backbone": PIXELS}, False),
        ("raw pixels + River LogisticRegression (OvR)", {"name": "LogisticRegression", "backbone": PIXELS}, False),
    ]
    curves = []
    print(f"\n(a) transfer: {len(images)} digits, prequential, consumed batches of {BATCH}")
    print(f"  {'variant':<50} {'@100':>6} {'@300':>6} {'@1000':>6} {'to 90%':>7} {'to 95%':>7} {'img/s':>7}")
    for name, model, pretrained in variants:
        c = prequential(name, {**model, "seed": seed}, images, pretrained)
        curves.append(c)
        shown = ["never" if n > len(images) else str(n) for n in (c.labels_to(0.90), c.labels_to(0.95))]
        print(f"  {('* ' if pretrained else '  ') + name:<50} {c.at(100):>6.3f} {c.at(300):>6.3f} "
              f"{c.at(1000):>6.3f} {shown[0]:>7} {shown[1]:>7} {len(images) / c.seconds:>7.0f}", flush=True)
    print("  (* pretrained)")
    return curves


# -- (b) continual -------------------------------------------------------------------------------------------
def _experiences(seed: int) -> list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    images = digit_images(seed=None)
    rng = np.random.default_rng(seed)
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    for c in range(10):
        mine = [e for e in images if e["label"] == c]
        idx = rng.permutation(len(mine))
        cut = int(len(mine) * 0.7)
        train += [mine[i] for i in idx[:cut]]
        test += [mine[i] for i in idx[cut:]]
    order = random.Random(seed)
    exps = []
    for pair in ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9)):
        tr = [e for e in train if e["label"] in pair]
        order.shuffle(tr)
        exps.append((tr, [e for e in test if e["label"] in pair]))
    return exps


def continual(seed: int) -> dict[str, tuple[float, float]]:
    from continual import run_experiences  # benchmarks/continual.py: the same loop on raw pixels

    exps = _experiences(seed)
    as_events = [([Event.model_validate(e) for e in tr], [Event.model_validate(e) for e in te]) for tr, te in exps]
    print(f"\n(b) class-incremental digits: {len(exps)} experiences of two classes, "
          f"{sum(len(tr) for tr, _ in exps)} training images, frozen pretrained CNN + 128-unit head")
    print(f"  {'strategy':<10} {'final acc':>9} {'forgetting':>10} {'img/s':>7}")
    out = {}
    for strategy, params in STRATEGIES.items():
        torch.manual_seed(seed)
        learner = build_learner(ModelSettings(
            name="Continual", seed=seed, backbone=CNN,
            params={"strategy": strategy, "strategy_params": params, "hidden": 128, "lr": 1e-3, "window_events": 128,
                    "train_epochs": 5, "train_mb_size": 32, "synchronous": True, "max_classes": 10}))
        assert isinstance(learner, ContinualLearner)
        res = run_experiences(learner, as_events)
        acc, forgetting = res.acc, res.forgetting
        out[strategy] = (acc, forgetting)
        print(f"  {strategy:<10} {acc:>9.3f} {forgetting:>10.3f} {res.events / res.seconds:>7.0f}", flush=True)
    return out


# -- (c) service vs in-process ---------------------------------------------------------------------------------
def service_vs_inprocess(n: int, seed: int) -> tuple[float, float]:
    from throughput import run_until_consumed

    base = digit_images(seed=seed)
    images = [{**base[i % len(base)], "id": f"img-{i}"} for i in range(n)]
    model = ModelSettings(name="SoftmaxRegression", backbone=CNN, seed=seed)
    with kafka_cluster(heap="1g") as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap, client="confluent")
        topic = f"vision-{uuid.uuid4().hex[:8]}"
        ensure_topics(kafka, [topic], partitions=1)
        publish(iter(images), topic, kafka, progress=False)
        settings = Settings(kafka=kafka.model_copy(update={"group_id": f"vision-{uuid.uuid4().hex[:6]}"}),
                            topics=TopicSettings(input=topic, predictions=f"{topic}-predictions",
                                                 dead_letter=f"{topic}-dlq"),
                            model=model, metrics=MetricsSettings(port=0))
        service_ips, _ = run_until_consumed(settings, n)
    events = [Event.model_validate(e) for e in images]
    for e in events:
        assert e.image is not None
        e.image.image()  # decoded beforehand: the in-process side measures the network and the head
    learner = build_learner(model)
    t0 = time.perf_counter()
    for i in range(0, len(events), BATCH):
        chunk = events[i:i + BATCH]
        learner.prepare_batch(chunk)
        for e in chunk:
            learner.predict_one(e)
            learner.learn_one(e, e.label)  # type: ignore[arg-type]
    inprocess_ips = len(events) / (time.perf_counter() - t0)
    return service_ips, inprocess_ips


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--service-images", type=int, default=9000)
    ap.add_argument("--skip-service", action="store_true")
    ap.add_argument("--only", choices=["transfer", "continual", "service"])
    args = ap.parse_args()
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addFilter(lambda r: "Call to deprecated function update" not in r.getMessage())
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="driftline-vision-") as tmp:
        if args.only in (None, "transfer"):
            curves = transfer(args.seed, Path(tmp))
            out["labels_to_90_pretrained"] = min(c.labels_to() for c in curves if c.pretrained)
            out["labels_to_90_scratch_best"] = min(c.labels_to() for c in curves if not c.pretrained)
            out["labels_ratio"] = round(out["labels_to_90_scratch_best"] / out["labels_to_90_pretrained"], 2)
            out["labels_to_95_pretrained"] = min(c.labels_to(0.95) for c in curves if c.pretrained)
            out["labels_to_95_scratch_best"] = min(c.labels_to(0.95) for c in curves if not c.pretrained)
    if args.only in (None, "continual"):
        res = continual(args.seed)
        out["replay_minus_naive"] = round(100 * (res["Replay"][0] - res["Naive"][0]), 1)
        out.update({f"{k.lower()}_acc": round(v[0], 4) for k, v in res.items()})
    if args.only in (None, "service") and not args.skip_service:
        svc, inproc = service_vs_inprocess(args.service_images, args.seed)
        print(f"\n(c) {args.service_images} images, frozen CNN + River SoftmaxRegression: service {svc:.0f} img/s "
              f"(real broker, librdkafka), in-process {inproc:.0f} img/s: ratio {svc / inproc:.2f}")
        out["service_ips"], out["inprocess_ips"] = round(svc, 1), round(inproc, 1)
        out["service_vs_backbone"] = round(svc / inproc, 3)
    print()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
