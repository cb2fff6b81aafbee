"""Save points: progress (committed offsets) and state always agree, and a partition that moves takes its
state with it.

A save point writes, in this order: a snapshot of every owned partition that changed (its pending label
joins and dedup window, `partition_state`) to the changelog topic, flushed; the learning state with the
offsets it reflects (the checkpoint, when ``checkpoint.directory`` is set); then it commits exactly those
offsets. Offsets are committed at save points only (every ``checkpoint.every_events`` events or
``every_seconds``, when partitions are revoked, at shutdown), and a save point takes effect when its commit
lands: state is only ever used together with the committed offsets it reflects exactly. So the group's
committed offset stays the one place that says where a partition resumes (tools that reset a group's offsets
keep working), and a crash at any point of a save point loses none of the group's learning and repeats none:
the state of the save point before is used, and the events since are consumed again (predicted again:
outputs are at-least-once) and learned once.

At start the newest checkpoint that is not ahead of the group's committed offsets is restored (a newer one
belongs to a save point whose commit did not land: it is set aside). When partitions are assigned, each one
starts from the group's committed offset with the state that reflects it: this instance's checkpoint (right
after a restart, for the partitions it held) or a snapshot on the changelog (the last owner's, or the one
before it); neither: no pending joins. Partitions that are revoked are saved, committed and then forgotten;
partitions lost without a revoke (the member was evicted) are not written (another member may own them
already) and are kept only until the next assignment, which gives them back to this member's own position if
nobody committed for them meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from pydantic import ValidationError

from driftline.errors import ConfigError
from driftline.learners.capabilities import BackgroundTrained
from driftline.learners.checkpoint import CheckpointInfo, CheckpointStore, DirectoryStore
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import CheckpointSettings
from driftline.stream.kafka.seam import Consumer, KafkaClientError, TopicPartition
from driftline.stream.observers import Ledger
from driftline.stream.partition_state import Changelog, Partitioned, Snapshot, behind, reflects, snapshot
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)

Commit = Callable[[Mapping[TopicPartition, int]], bool]  # False: not committed now (retriable), retried soon
Committed = Callable[[Sequence[TopicPartition]], dict[TopicPartition, int | None]]


def _nothing() -> None:
    return None


class Checkpointer:
    def __init__(self, cfg: CheckpointSettings, processor: EventProcessor, metrics: ServiceMetrics,
                 store: CheckpointStore | None = None, *, parts: Sequence[Partitioned] = (),
                 changelog: Changelog | None = None,
                 flush: Callable[[], None] = _nothing, commit: Commit | None = None,
                 begin: Callable[[], None] | None = None, member: str = "driftline", owner: str = "",
                 trained: BackgroundTrained | None = None) -> None:
        self.cfg = cfg
        self.processor = processor
        self.metrics = metrics
        if store is None and cfg.directory is not None:
            store = DirectoryStore(cfg.directory, keep=cfg.keep)
        self.store = store
        self.changelog = changelog
        self.flush = flush
        self.commit = commit
        # kafka.exactly_once: every batch's outputs and offsets are committed in one transaction (``begin`` opens
        # it, ``commit`` commits it with the offsets), save points every interval inside one
        self.begin = begin
        # a learner training in the background (Continual): a due save point is put off while it trains a window
        self.trained = trained
        self._put_off: dict[str, float] = {}  # since when, by trigger
        self.member = member
        self.owner = owner  # this instance's stable name (the same across its restarts); "": unknown
        self.catch_up: dict[TopicPartition, int] = {}  # replay below these offsets without outputs (exactly_once)
        self._saved: set[TopicPartition] = set()  # partitions the last save point had an offset for
        self._uncommitted = False  # the last save point's commit failed: retried
        self._committed_at: dict[TopicPartition, int] = {}  # the group's offsets as this member last knew them
        self._held: set[int] = set()  # partitions lost (eviction) whose state is kept in case they come back
        self._seek: Callable[[TopicPartition, int], None] = lambda tp, offset: None  # the consumer's, when assigned
        self.parts = list(parts)
        self.offsets: dict[TopicPartition, int] = {}  # next offset the in-memory state has consumed to
        self._owned: set[int] = set()  # partitions (by number: the input's and the labels topic's) assigned
        self._restored: set[int] = set()  # partitions the restored checkpoint holds, until the first assignment
        self._dirty: set[int] = set()  # partitions changed since their last snapshot
        self._since = 0
        self._last = time.monotonic()

    def restore(self, committed: Committed | None = None) -> CheckpointInfo | None:
        """Load the newest checkpoint that is not ahead of the group's ``committed`` offsets (a newer one is
        moved aside: its save point's commit did not land)."""
        if self.store is None:
            log.warning("checkpointing is off (checkpoint.directory unset): a restart starts from the initial "
                        "model, and events consumed again after a crash are learned again")
            return None
        version = self._restorable(committed) if committed is not None else None
        loaded = self.store.load(version)
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
        self.offsets = {TopicPartition(t, p): o for t, parts in info.offsets.items() for p, o in parts.items()}
        self._restored = {tp.partition for tp in self.offsets}
        self.metrics.checkpoint_restored.set(info.version)
        log.info("restored checkpoint %d (%d events learned; offsets %s)", info.version, info.learned, info.offsets)
        return info

    def _restorable(self, committed: Committed) -> int | None:
        """The newest checkpoint version whose offsets the group has committed (or gone beyond); None: the newest."""
        assert self.store is not None
        infos = self.store.list()
        if not infos:
            return None
        tps = sorted({TopicPartition(t, p) for i in infos for t, parts in i.offsets.items() for p in parts})
        try:
            group = committed(tps)
        except KafkaClientError as exc:
            log.warning("kafka: the group's committed offsets could not be read (%s: %s); restoring the newest "
                        "checkpoint", exc.kind, exc)
            return None
        for info in reversed(infos):
            ahead = [f"{t}-{p} at {o} (committed: {group.get(TopicPartition(t, p))})"
                     for t, parts in info.offsets.items() for p, o in parts.items()
                     if (c := group.get(TopicPartition(t, p))) is None or o > c]
            if not ahead:
                if info is not infos[-1]:
                    self.store.rollback(info.version)
                    log.warning("checkpoint %d is set aside: the last process died before its save point "
                                "committed; restoring %d, which the group's offsets reflect", infos[-1].version,
                                info.version)
                return info.version
            log.info("checkpoint %d is ahead of the group's committed offsets: %s", info.version, "; ".join(ahead))
        log.warning("no checkpoint in %s is reflected by the group's committed offsets (were they reset?): "
                    "restoring the newest; events since the last commit may be learned twice", self.cfg.directory)
        return None

    def advance(self, records: Sequence[InboundRecord]) -> None:
        """Record that the state now reflects these records (call after processing a batch)."""
        last = {(r.topic, r.partition): r.offset for r in records}  # a partition's records come in offset order
        for (topic, partition), offset in last.items():
            self.offsets[TopicPartition(topic, partition)] = offset + 1
            self._dirty.add(partition)
        self._since += len(records)
        if self.catch_up:
            for tp, end in list(self.catch_up.items()):
                if self.offsets.get(tp, 0) >= end:
                    del self.catch_up[tp]
                    log.info("partition %s-%d caught up at offset %d (replayed without outputs)", tp.topic,
                             tp.partition, end)

    def replaying(self, records: Sequence[InboundRecord]) -> tuple[Sequence[InboundRecord], Sequence[InboundRecord]]:
        """The records below their partition's catch-up offset (their outputs were committed already: they are
        learned again without outputs), and the others."""
        ends = self.catch_up
        if not ends:  # every batch but the first few after a move: no per-record work
            return (), records
        again: list[InboundRecord] = []
        live: list[InboundRecord] = []
        for r in records:
            e = ends.get(TopicPartition(r.topic, r.partition))
            (again if e is not None and r.offset < e else live).append(r)
        return again, live

    def due(self) -> bool:
        """Whether a save point is due: every_events or every_seconds passed with records, or a partition was
        consumed that the last save point had no offset for (so every committed offset has a state); or the
        last save point's commit failed and a second has passed (it is retried, also on a quiet stream)."""
        if self._since == 0:
            return self._uncommitted and time.monotonic() - self._last >= min(1.0, self.cfg.every_seconds)
        if self.begin is not None and not self._saved.issuperset(self.offsets):
            return True
        return ((self._since >= self.cfg.every_events or time.monotonic() - self._last >= self.cfg.every_seconds)
                and (self.store is None or self.between_windows("interval", self.cfg.every_seconds)))

    def between_windows(self, trigger: str, limit: float) -> bool:
        """Whether a save point for ``trigger`` (that snapshots the model or reads its parameters) can be taken
        now without waiting for a window in training: it is put off (counted once) until the learner is between
        two windows, which the learner then holds until the save point is over; put off for ``limit`` seconds,
        it is taken anyway (waiting for the window). Always true without a learner training in the background."""
        if self.trained is None or self.trained.hold_between_windows():
            self._put_off.pop(trigger, None)
            return True
        now = time.monotonic()
        if trigger not in self._put_off:
            self._put_off[trigger] = now
            self.metrics.checkpoint_deferrals.labels(trigger).inc()
        if now - self._put_off[trigger] < limit:
            return False
        del self._put_off[trigger]
        return True

    def release(self) -> None:
        """After a step `between_windows` held the learner's training for (a save point does it itself): training
        goes on, unless another step is still put off (it is taken at the next ask, the learner still held)."""
        if self.trained is not None and not self._put_off:
            self.trained.release_hold()

    def end_batch(self) -> None:
        """After a batch's outputs are flushed: a save point when one is due; with exactly_once, the batch's
        transaction is committed either way."""
        if self.due():
            self.save("interval")
        elif self.begin is not None:
            self._commit_owned()

    def save(self, trigger: str, *, changed: bool = False) -> bool:
        """A save point, if records were processed since the last one, a partition's state changed, or the
        caller knows the model ``changed`` without them (background training finished a window): partition
        snapshots (flushed), the checkpoint, then the commit of the offsets they reflect. Outputs of the
        processed records must be flushed already."""
        if self._since == 0 and not changed and not self._dirty:
            if self._uncommitted:  # the last save point's commit failed (Kafka away): only the commit again
                self._commit_owned()
                self._last = time.monotonic()
            return False
        try:
            if self.begin is not None:
                self.begin()  # snapshots, and the offsets, in the batch's transaction (or one of their own)
            self._write_snapshots()
            if self.store is not None:
                self._save_checkpoint(trigger)
        finally:
            self._put_off.pop("interval", None)  # (whatever the trigger: this save point is the interval's too)
            self.release()  # the learner's training was held for this save point (`between_windows`)
        self._commit_owned()
        self._saved = set(self.offsets)
        self._since = 0
        self._last = time.monotonic()
        return True

    @property
    def uncommitted(self) -> bool:
        """The last save point's commit failed (it is retried): what it saved is not the group's yet."""
        return self._uncommitted

    def _commit_owned(self) -> None:
        ahead = self.catch_up  # never commit below what a transaction committed already
        owned = {tp: max(o, ahead.get(tp, o)) for tp, o in self.offsets.items() if tp.partition in self._owned}
        if self.commit is not None and (owned or self.begin is not None):
            self._uncommitted = not self.commit(owned)
            if not self._uncommitted:
                self._committed_at.update(owned)

    def _write_snapshots(self) -> None:
        changelog, dirty = self.changelog, self._dirty & self._owned
        self._dirty = set()
        if changelog is None or not self.parts or not dirty:
            return
        written = 0
        for p in sorted(dirty):
            written += changelog.write(snapshot(p, self.offsets, self.parts, member=self.member, owner=self.owner))
        self.flush()  # acknowledged before the commit that relies on them
        self.metrics.partition_state_bytes.inc(written)

    def _save_checkpoint(self, trigger: str) -> None:
        assert self.store is not None
        t0 = time.perf_counter()
        offsets: dict[str, dict[int, int]] = {}
        for tp, off in self.offsets.items():
            offsets.setdefault(tp.topic, {})[tp.partition] = off
        info = self.store.save(self.processor.state_dict(), offsets, learned=self.processor.require(Ledger).learned)
        self.metrics.checkpoint_duration.observe(time.perf_counter() - t0)
        self.metrics.checkpoints.labels(trigger).inc()
        self.metrics.checkpoint_last.set_to_current_time()
        self.metrics.checkpoint_bytes.set(info.size)
        log.debug("checkpoint %d written (%s, %d bytes)", info.version, trigger, info.size)

    # -- rebalances -------------------------------------------------------------------------------------
    def revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions are about to go (the batch before is processed and flushed): a save point that commits
        them, then their state is let go."""
        self.save("rebalance")
        self._forget({tp.partition for tp in partitions})
        self.processor.publish_gauges()  # what left with them (pending joins) leaves the gauges now

    def lost(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions already gone (this member was evicted, e.g. the coordinator was away longer than the
        session timeout): another member may own them and have read their state, so nothing is written for them.
        Their state here is kept until the next assignment: if they come back and nobody committed for them
        meanwhile, this member goes on from where it was (its model learned past the last commit)."""
        numbers = {tp.partition for tp in partitions}
        self._held |= numbers
        self._owned -= numbers

    def assigned(self, consumer: Consumer, partitions: Iterable[TopicPartition]) -> None:
        """Start each assigned partition from the group's committed offset with the state that reflects it;
        forget every partition this member does not own."""
        tps = sorted(partitions)
        if not tps:
            return
        numbers = sorted({tp.partition for tp in tps})
        committed = consumer.committed(tps)
        self._seek = consumer.seek
        snapshots = self.changelog.read(numbers) if self.changelog is not None and self.parts else {}
        for p in numbers:
            mine = {tp: committed.get(tp) for tp in tps if tp.partition == p}
            self._take(p, mine, snapshots.get(p, []))
        self._owned |= set(numbers)
        self._restored = set()
        self._held = set()
        self._forget_unowned()
        self.processor.publish_gauges()  # what came with them, and what was forgotten, shows at once

    def _newer_elsewhere(self, local: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None],
                         snaps: Sequence[Snapshot]) -> Snapshot | None:
        """exactly_once: a snapshot another instance wrote for this partition, not ahead of the committed offsets and
        newer than this instance's checkpoint. Replaying from the checkpoint would learn again what that instance
        learned after taking the partition over."""
        if not self.owner:
            return None
        for s in snaps:
            pos = s.positions()
            if (s.owner and s.owner != self.owner and behind(pos, committed)
                    and all(pos.get(tp, -1) >= o for tp, o in local.items()) and pos != dict(local)):
                return s
        return None

    def _take(self, p: int, committed: Mapping[TopicPartition, int | None], snaps: Sequence[Snapshot]) -> None:
        """Partition ``p`` resumes at the committed offsets with the state that reflects them exactly. With
        exactly_once (a transaction per batch, a save point per interval) the newest state not ahead of them is
        taken instead, and the records between it and the committed offsets are replayed without outputs."""
        where = ", ".join(f"{tp.topic} at {c}" for tp, c in sorted(committed.items()) if c is not None)
        if p in self._held:
            if all(c == self._committed_at.get(tp) for tp, c in committed.items()):
                self._dirty.add(p)  # back after an eviction, nobody took it meanwhile: go on from where it was
                for tp, o in self.offsets.items():
                    if tp.partition == p and o != committed.get(tp):
                        self._seek(tp, o)
                self._committed_at.update({tp: c for tp, c in committed.items() if c is not None})
                self._saved |= {tp for tp in self.offsets if tp.partition == p}
                log.info("partition %d is back after an eviction with nothing committed meanwhile: it goes on "
                         "from this member's own position", p)
                self.metrics.partition_assignments.labels("checkpoint").inc()
                return
            self._drop(p)
        local = {tp: o for tp, o in self.offsets.items() if tp.partition == p} if p in self._restored else None
        fits = behind if self.begin is not None else reflects
        state: dict[TopicPartition, int] | None = None
        elsewhere = self._newer_elsewhere(local, committed, snaps) if local is not None and self.begin else None
        if elsewhere is not None and self._load(p, elsewhere):
            # another instance committed for p beyond this instance's checkpoint: its model learned those records
            # (the ones this instance lost with its process among them), so they are not learned again here
            source, state = "changelog", elsewhere.positions()
            log.info("partition %d resumes with the newer state %s saved (%s): it owned the partition after this "
                     "instance's checkpoint", p, elsewhere.writer, where or "nothing committed")
        elif local is not None and fits(local, committed):
            source, state = "checkpoint", local
            self._dirty.add(p)  # the changelog may not have it
            log.info("partition %d resumes with this instance's checkpoint (%s)", p, where or "nothing committed")
        else:
            snap = next((s for s in snaps if fits(s.positions(), committed)), None)
            if snap is not None and self._load(p, snap):
                source, state = "changelog", snap.positions()
                log.info("partition %d resumes with the state %s saved (%s)", p, snap.writer, where or "nothing "
                         "committed")
            else:
                self._drop(p)
                source = "none"
                if snaps or local is not None:
                    log.warning("partition %d: no saved state reflects the group's committed offsets (%s); it "
                                "starts there without pending label joins or dedup ids", p, where or "none")
                else:
                    log.info("partition %d resumes with no saved state (%s)", p, where or "nothing committed")
        for tp, c in committed.items():  # what a save point commits for it until records move it on
            if c is None:
                self.offsets.pop(tp, None)
                continue
            start = state.get(tp, c) if state is not None else c
            self.offsets[tp] = start
            if start < c:  # exactly_once: learned again without outputs up to the committed offset
                self._seek(tp, start)
                self.catch_up[tp] = c
                log.info("partition %s-%d replays offsets %d..%d without outputs (committed by a transaction "
                         "after the state was saved)", tp.topic, tp.partition, start, c)
        self._saved |= {tp for tp, c in committed.items() if c is not None}
        self._committed_at.update({tp: c for tp, c in committed.items() if c is not None})
        self.metrics.partition_assignments.labels(source).inc()

    def _load(self, p: int, snap: Snapshot) -> bool:
        self._drop(p)
        try:
            for part in self.parts:
                if part.key in snap.parts:
                    part.load_partition(p, snap.parts[part.key])
        except (ValidationError, ValueError, KeyError, TypeError) as exc:
            log.error("partition %d: the state %s saved cannot be loaded (%s: %s); the partition starts without it",
                      p, snap.writer, type(exc).__name__, exc)
            self._drop(p)
            return False
        return True

    def _drop(self, p: int) -> None:
        for part in self.parts:
            part.drop_partition(p)
        for tp in [tp for tp in self.offsets if tp.partition == p]:
            del self.offsets[tp]
            self.catch_up.pop(tp, None)
            self._saved.discard(tp)
        self._dirty.discard(p)

    def _forget(self, numbers: set[int]) -> None:
        for p in numbers:
            self._drop(p)
        self._owned -= numbers

    def _forget_unowned(self) -> None:
        held = {tp.partition for tp in self.offsets}
        for part in self.parts:
            held |= part.partitions()
        for p in held - self._owned:
            self._drop(p)


def _describe(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic} at {o}" for tp, o in sorted(offsets.items()))
