"""When to checkpoint, what offsets the state reflects, and where to resume after a restart.

The learning state and the next offset of every partition it has consumed are saved together
(after the batch's outputs are flushed, before offsets are committed), every N events or T
seconds, when partitions are revoked, and on shutdown. On start the newest valid checkpoint is
restored; whenever partitions are assigned, each one the state knows is sought to the offset the
state reflects. Kafka's committed offsets are only a progress marker, so after a crash the events
after the checkpoint are consumed (and predicted) again and learned exactly once by the state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence

from driftline.errors import ConfigError
from driftline.learners.checkpoint import CheckpointInfo, CheckpointStore, DirectoryStore
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import CheckpointSettings
from driftline.stream.kafka.seam import Consumer, TopicPartition
from driftline.stream.observers import Ledger
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, cfg: CheckpointSettings, processor: EventProcessor, metrics: ServiceMetrics,
                 store: CheckpointStore | None = None) -> None:
        self.cfg = cfg
        self.processor = processor
        self.metrics = metrics
        if store is None and cfg.directory is not None:
            store = DirectoryStore(cfg.directory, keep=cfg.keep)
        self.store = store
        self.offsets: dict[tuple[str, int], int] = {}  # next offset the in-memory state has consumed to
        self._since = 0
        self._last = time.monotonic()

    def restore(self) -> CheckpointInfo | None:
        if self.store is None:
            log.warning("checkpointing is off (checkpoint.directory unset): a restart starts from the initial "
                        "model, and events consumed again after a crash are learned again")
            return None
        loaded = self.store.load()
        skipped = getattr(self.store, "corrupt_skipped", 0)
        if skipped:
            self.metrics.checkpoint_corrupt.inc(skipped)
        if loaded is None:
            log.info("no checkpoint yet in %s: starting from the initial model", self.cfg.directory)
            return None
        info, state = loaded
        try:
            self.processor.load_state_dict(state)
        except (ValueError, KeyError) as exc:
            raise ConfigError(
                f"checkpoint {info.version} at {info.location} does not fit this configuration: {exc}. "
                "Point checkpoint.directory elsewhere to start fresh, or restore the matching model config."
            ) from exc
        self.offsets = {(t, p): o for t, parts in info.offsets.items() for p, o in parts.items()}
        self.metrics.checkpoint_restored.set(info.version)
        log.info("restored checkpoint %d (%d events learned; offsets %s)", info.version, info.learned, info.offsets)
        return info

    def advance(self, records: Sequence[InboundRecord]) -> None:
        """Record that the state now reflects these records (call after processing a batch)."""
        offsets = self.offsets
        for r in records:
            offsets[(r.topic, r.partition)] = r.offset + 1
        self._since += len(records)

    def due(self) -> bool:
        return self.store is not None and self._since > 0 and (
            self._since >= self.cfg.every_events or time.monotonic() - self._last >= self.cfg.every_seconds)

    def save(self, trigger: str, *, changed: bool = False) -> CheckpointInfo | None:
        """Write the state and the offsets it reflects, if records were processed since the last one or the
        caller knows the state ``changed`` without them (background training finished a window)."""
        if self.store is None or (self._since == 0 and not changed):
            return None
        t0 = time.perf_counter()
        offsets: dict[str, dict[int, int]] = {}
        for (topic, partition), off in self.offsets.items():
            offsets.setdefault(topic, {})[partition] = off
        info = self.store.save(self.processor.state_dict(), offsets, learned=self.processor.require(Ledger).learned)
        self.metrics.checkpoint_duration.observe(time.perf_counter() - t0)
        self.metrics.checkpoints.labels(trigger).inc()
        self.metrics.checkpoint_last.set_to_current_time()
        self.metrics.checkpoint_bytes.set(info.size)
        self._since = 0
        self._last = time.monotonic()
        log.debug("checkpoint %d written (%s, %d bytes)", info.version, trigger, info.size)
        return info

    def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions are about to go: save what the state reflects (the batch before is flushed and committed)."""
        self.save("rebalance")

    def seek_assigned(self, consumer: Consumer, assigned: Iterable[TopicPartition]) -> None:
        """Resume each assigned partition the state knows from the offset the state reflects."""
        for tp in assigned:
            off = self.offsets.get((tp.topic, tp.partition))
            if off is not None:
                consumer.seek(tp, off)
                log.info("partition %s-%d resumes at offset %d (checkpointed state)", tp.topic, tp.partition, off)
