"""Feature-extraction mode: a River head learning online on a frozen backbone's embeddings.

`PreparedBatch` holds the backbone's output for the consumed batch being processed: the processor
hands the whole batch to ``prepare_batch`` (one batched backbone call), then predicts and learns
event by event in stream order from the cached rows. An event that was not prepared (or whose
batch call failed) is embedded on its own, so the cache is only ever a speed-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from driftline.core import Event, EventRejected
from driftline.learners.backbones import Backbone
from driftline.learners.capabilities import Capability
from driftline.learners.config import ModelSettings
from driftline.learners.river_head import RiverLearner


class PreparedBatch:
    """Per-event backbone outputs of the current batch, looked up by event object identity."""

    def __init__(self, compute: Callable[[Sequence[Event]], Sequence[Any]], check: Callable[[Event], None]) -> None:
        self._compute = compute
        self._check = check
        self._events: list[Event] = []  # keeps the events alive, so their id()s stay unique
        self._items: dict[int, Any] = {}
        self._source: Sequence[Event] | None = None  # the batch last prepared, as it was handed in

    def prepare(self, events: Sequence[Event]) -> None:
        if events is self._source:  # this very batch, prepared already (models sharing one backbone)
            return
        self._source = events
        self._events, self._items = [], {}
        ok = []
        for e in events:
            try:
                self._check(e)
            except EventRejected:
                continue  # rejected again (and dead-lettered) when it is predicted
            ok.append(e)
        if ok:
            items = self._compute(ok)
            self._events = ok
            self._items = {id(e): item for e, item in zip(ok, items, strict=True)}

    def holds(self, events: Sequence[Event]) -> bool:
        """Whether every one of ``events`` belongs to the prepared batch."""
        return all(id(e) in self._items for e in events)

    def get(self, e: Event) -> Any:
        item = self._items.get(id(e))
        if item is None:
            self._check(e)
            item = self._compute([e])[0]
        return item


class BackboneParts:
    """For learners with a backbone and a batch cache: spawned learners share both (or, detached, start with
    an empty cache of their own), and the backbone's batch-norm statistics are part of the state."""

    backbone: Backbone
    _batch: PreparedBatch

    def _shared_parts(self) -> list[object]:
        return [self.backbone, self._batch]

    def _detached_memo(self) -> dict[int, Any]:
        return {id(self._batch._events): [], id(self._batch._items): {}}  # the copy starts with an empty cache

    def _norm_state(self) -> dict[str, Any] | None:
        return self.backbone.norm_state()

    def _load_norm_state(self, state: Mapping[str, Any]) -> None:
        if state.get("norm") is not None:
            self.backbone.load_norm_state(state["norm"])


class BackboneRiverLearner(BackboneParts, RiverLearner):
    """River head on embeddings ``{"e0": ..., "e1": ...}`` from a pretrained backbone."""

    capabilities = frozenset({Capability.HAS_BACKBONE})

    def __init__(self, cfg: ModelSettings, backbone: Backbone, *, batch: PreparedBatch | None = None) -> None:
        """``batch``: another learner's batch cache on the same ``backbone`` (models that share a frozen
        backbone: one forward per batch for all of them)."""
        super().__init__(cfg)
        self.backbone = backbone
        self._names = [f"e{i}" for i in range(backbone.dim)]
        self._batch = batch if batch is not None else PreparedBatch(self._embed, backbone.check)
        self.fingerprint = dict(backbone.fingerprint)

    def sharing(self, cfg: ModelSettings) -> BackboneRiverLearner:
        """Another River head with its own config on this learner's backbone and batch cache."""
        return BackboneRiverLearner(cfg, self.backbone, batch=self._batch)

    def _embed(self, events: Sequence[Event]) -> list[list[float]]:
        rows: list[list[float]] = self.backbone.embed(events).cpu().tolist()
        return rows

    def prepare_batch(self, xs: Sequence[Event]) -> None:
        self._batch.prepare(xs)

    def _features(self, x: Event) -> Mapping[str, Any]:
        return dict(zip(self._names, self._batch.get(x), strict=True))

    def embedding(self, x: Event) -> list[float]:
        """The backbone's embedding of ``x`` (cached for a prepared batch), for input drift detection."""
        row: list[float] = self._batch.get(x)
        return row
