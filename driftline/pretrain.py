"""`driftline pretrain`: learn a source model on a source domain, save it as a starting model.

The model config is the one `driftline run` will use (same backbone, head and classes), so the file
loads as ``model.start_from`` and the service adapts it to the target stream instead of starting
from nothing. Training is test-then-train over the source, in batches (the backbone embeds each
batch once), and reports the source's prequential accuracy (or MAE) as it goes.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from driftline.core import Event, EventRejected
from driftline.learners.base import Learner, offline
from driftline.learners.checkpoint import write_model_file
from driftline.learners.factory import build_learner
from driftline.monitoring.prequential import make_tracker
from driftline.progress import progress_bar
from driftline.settings import ModelSettings
from driftline.stream.codec import DecodeError, decode_event
from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)

Source = Iterable[dict[str, Any] | Event | InboundRecord]


@dataclass
class PretrainReport:
    source: str
    output: str
    learned: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    metric: str = "accuracy"
    value: float | None = None
    seconds: float = 0.0

    def line(self) -> str:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        value = "n/a" if self.value is None else f"{self.value:.4f}"
        return (f"pretrained on {self.source}: {self.learned} labeled events in {self.seconds:.1f}s, "
                f"prequential {self.metric} {value}; skipped: {skipped}; wrote {self.output}")


def _events(source: Source, skipped: Counter[str]) -> Iterator[Event]:
    for item in source:
        if isinstance(item, Event):
            yield item
        elif isinstance(item, InboundRecord):
            try:
                yield decode_event(item.value)
            except DecodeError as exc:
                skipped[exc.reason] += 1
        else:
            try:
                yield Event.model_validate(item)
            except ValidationError:
                skipped["invalid_event"] += 1


def pretrain(cfg: ModelSettings, source: Source, output: str | Path, *, source_name: str,
             limit: int | None = None, batch_size: int = 256, progress: bool | None = None) -> PretrainReport:
    """Train ``cfg``'s model on ``source`` and write it to ``output``; returns what happened."""
    learner: Learner = build_learner(cfg)
    report = PretrainReport(source=source_name, output=str(output))
    tracker = make_tracker(cfg.task, 1000)
    events = _events(source, report.skipped)
    if limit is not None:
        events = itertools.islice(events, limit)
    bar = progress_bar(limit, desc="pretrain", unit="ev", show=progress)
    t0 = time.monotonic()
    with offline(learner):
        while chunk := list(itertools.islice(events, batch_size)):
            learner.prepare_batch(chunk)
            for e in chunk:
                if e.label is None:
                    report.skipped["no_label"] += 1
                    continue
                try:
                    pred = learner.predict_one(e)
                    learner.learn_one(e, e.label)
                except EventRejected as exc:
                    report.skipped[exc.reason] += 1
                    continue
                tracker.update(e.label, pred.value)  # type: ignore[arg-type]
                report.learned += 1
            bar.update(len(chunk))
        bar.close()
    report.seconds = time.monotonic() - t0
    report.metric = "accuracy" if cfg.task == "classification" else "MAE"
    report.value = tracker.cumulative if tracker.n else None
    if report.learned == 0:
        from driftline.errors import ConfigError

        raise ConfigError(f"pretrain: no labeled event could be learned from {source_name} "
                          f"(skipped: {dict(report.skipped)}); nothing written")
    meta = {"model": cfg.name, "task": cfg.task, "backbone": cfg.backbone.kind, "source": source_name,
            "learned": report.learned, report.metric: report.value}
    write_model_file(output, learner.state_dict(), meta)
    return report
