"""What belongs to an input partition rather than to the model, and the compacted changelog topic that
carries it from one member of the group to the next.

The model (learner, quality trackers, detectors, adaptation, ledger) belongs to the instance. What belongs
to a partition is its offsets, the label joins waiting on it and its part of the dedup window: when the
partition moves to another member, that member needs them to go on where the last owner stopped (a label
whose event was predicted by the last owner must still find it). Each save point writes a snapshot of every
owned partition that changed to partition *p* of the changelog topic, keyed by *p*; a member assigned *p*
reads partition *p* of the changelog to its end and takes the snapshot that reflects the group's committed
offsets of *p* exactly.

Nothing read back from Kafka is unpickled: a snapshot is JSON with a format version that readers check, and
each part is validated again when it is loaded. A snapshot larger than one record is cut into chunks written
before their manifest (the record keyed *p*), each chunk keyed by the snapshot's generation, so a reader never
mixes two snapshots and a torn write (a crash between chunks) leaves the previous snapshot readable. The
manifest also names the snapshot before it: a save point takes effect only when its commit lands, so the
next owner needs the snapshot that reflects the committed offsets exactly, which is the previous one when
the writer died between its snapshot and its commit. Chunks no manifest names any more are deleted
(tombstones) after the next manifest, and the topic's compaction drops them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from driftline.stream.kafka.seam import TopicPartition
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)

FORMAT = 1
CHUNK_BYTES = 500_000  # well under every client's and broker's default record limit (~1 MB)
COMPACTED = {"cleanup.policy": "compact"}


class Partitioned(Protocol):
    """A pipeline part that keeps something per input partition (the label join, the dedup window)."""

    key: ClassVar[str]

    def partitions(self) -> set[int]:
        """The partitions it holds something for."""
        ...

    def export_partition(self, partition: int) -> Any:
        """What it holds for ``partition``, as JSON data."""
        ...

    def drop_partition(self, partition: int) -> None: ...

    def load_partition(self, partition: int, data: Any) -> None:
        """Take in what `export_partition` gave (possibly on another member); validate it."""
        ...

class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Snapshot(_Frozen):
    """One partition's state at a save point: the offsets it reflects and each part's data."""

    format: Literal[1] = 1
    partition: int = Field(ge=0)
    offsets: dict[str, int]  # topic -> next offset to read (the input's and the labels topic's partition)
    parts: dict[str, Any]  # Partitioned.key -> its data
    written_at_ms: int
    writer: str  # which member wrote it (for the log)
    owner: str = ""  # the writing instance's stable name (kafka.instance_id, or its host and checkpoint directory)

    def positions(self) -> dict[TopicPartition, int]:
        return {TopicPartition(t, self.partition): o for t, o in self.offsets.items()}


class Manifest(_Frozen):
    format: Literal[1] = 1
    partition: int = Field(ge=0)
    generation: str
    chunks: int = Field(ge=1)
    size: int = Field(ge=0)
    sha256: str
    previous: Manifest | None = None  # the snapshot before (its save point's commit landed if this one's did not)

    def chunk_keys(self) -> list[str]:
        return [f"{self.partition}.{self.generation}.{i}" for i in range(self.chunks)]


def reflects(offsets: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None]) -> bool:
    """Whether state at ``offsets`` is exactly what the group committed for these partitions. A save point takes
    effect when its commit lands: state ahead of the commit belongs to a save point that did not finish, and
    state behind it was moved on by another member since."""
    return all(offsets.get(tp) == c for tp, c in committed.items())


def behind(offsets: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None]) -> bool:
    """Whether state at ``offsets`` has offsets for exactly the committed partitions, none of them ahead (with
    exactly_once, transactions commit offsets between save points: the gap is replayed without outputs)."""
    return all(tp not in offsets if c is None else (tp in offsets and offsets[tp] <= c) for tp, c in committed.items())


class ChangelogError(Exception):
    """A snapshot that cannot be used (torn, corrupt, of another format): the partition starts without it."""


class Changelog:
    """Writes and reads partition snapshots on a compacted topic with the input's partition count. The newest
    two snapshots of each partition stay readable: the newest one's save point may not have committed."""

    def __init__(self, topic: str, writer: RecordWriter,
                 read: Callable[[Sequence[TopicPartition]], list[InboundRecord]], *,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self.topic = topic
        self.writer = writer
        self._read = read
        self.chunk_bytes = chunk_bytes
        self._newest: dict[int, Manifest] = {}  # partition -> the manifest last written or read
        self._stale: dict[int, list[str]] = {}  # partition -> chunk keys to delete after its next manifest
        self._generation = 0

    def write(self, snap: Snapshot) -> int:
        """Send ``snap`` (chunks, then its manifest, then tombstones of the chunks no manifest names any more):
        the caller flushes before it commits. Returns the bytes written."""
        p = snap.partition
        data = orjson.dumps(snap.model_dump(mode="json"))
        self._generation += 1
        step = self.chunk_bytes
        chunks = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        before = self._newest.get(p)
        manifest = Manifest(partition=p, generation=f"{snap.written_at_ms:x}-{self._generation:x}",
                            chunks=len(chunks), size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                            previous=before.model_copy(update={"previous": None}) if before is not None else None)
        send = self.writer.send
        for key, chunk in zip(manifest.chunk_keys(), chunks, strict=True):
            send(self.topic, key.encode(), chunk, p)
        send(self.topic, str(p).encode(), orjson.dumps(manifest.model_dump()), p)
        dropped = before.previous.chunk_keys() if before is not None and before.previous is not None else []
        for key in [*dropped, *self._stale.pop(p, [])]:
            send(self.topic, key.encode(), None, p)
        self._newest[p] = manifest
        return len(data)

    def read(self, partitions: Sequence[int]) -> dict[int, list[Snapshot]]:
        """The usable snapshots of each of these partitions, newest first (at most two)."""
        if not partitions:
            return {}
        latest: dict[str, bytes | None] = {}
        for r in self._read([TopicPartition(self.topic, p) for p in partitions]):
            if r.key is not None:
                latest[r.key.decode("utf-8", "replace")] = r.value
        out: dict[int, list[Snapshot]] = {}
        for p in partitions:
            live = [k for k, v in latest.items() if k.startswith(f"{p}.") and v is not None]
            self._newest.pop(p, None)
            raw = latest.get(str(p))
            if raw is None:
                self._stale[p] = live
                continue
            try:
                manifest = Manifest.model_validate_json(raw)
                if manifest.partition != p:
                    raise ChangelogError(f"it names partition {manifest.partition}")
            except (ValidationError, ChangelogError) as exc:
                log.error("partition state of partition %d on %s cannot be used (unreadable manifest: %s); the "
                          "partition starts without it", p, self.topic, _reason(exc))
                self._stale[p] = live
                continue
            self._newest[p] = manifest
            named = [m for m in (manifest, manifest.previous) if m is not None]
            used = {k for m in named for k in m.chunk_keys()}
            self._stale[p] = [k for k in live if k not in used]  # chunks of torn writes
            snaps = []
            for m in named:
                try:
                    snaps.append(_assemble(p, m, latest))
                except ChangelogError as exc:
                    log.error("partition state of partition %d on %s (snapshot %s) cannot be used (%s)", p,
                              self.topic, m.generation, exc)
            out[p] = snaps
        return out


def _assemble(p: int, manifest: Manifest, latest: Mapping[str, bytes | None]) -> Snapshot:
    keys = manifest.chunk_keys()
    chunks = [latest.get(k) for k in keys]
    missing = [k for k, c in zip(keys, chunks, strict=True) if c is None]
    if missing:
        raise ChangelogError(f"chunks missing: {', '.join(missing[:3])}")
    data = b"".join(c for c in chunks if c is not None)
    if len(data) != manifest.size or hashlib.sha256(data).hexdigest() != manifest.sha256:
        raise ChangelogError(f"{len(data)} bytes whose sha256 does not match the manifest's")
    try:
        snap = Snapshot.model_validate_json(data)
    except ValidationError as exc:
        raise ChangelogError(f"unreadable snapshot: {_reason(exc)}") from None
    if snap.partition != p:
        raise ChangelogError(f"the snapshot names partition {snap.partition}")
    return snap


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(x) for x in e['loc']) or 'value'}: {e['msg']}"
    return str(exc)


def snapshot(partition: int, offsets: Mapping[TopicPartition, int], parts: Sequence[Partitioned], *,
             member: str, owner: str = "") -> Snapshot:
    """``partition``'s state now, from each part, with the offsets it reflects."""
    mine = {tp.topic: o for tp, o in offsets.items() if tp.partition == partition}
    return Snapshot(partition=partition, offsets=mine,
                    parts={part.key: part.export_partition(partition) for part in parts},
                    written_at_ms=int(time.time() * 1000), writer=member, owner=owner)
