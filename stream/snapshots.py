"""``sync.mode: ensemble``: every member publishes a signed snapshot of its model to the sync topic (compacted,
keyed by member: the topic keeps each member's latest), reads the others', and serves the vote of its own model
and their snapshots (`learners.ensemble.GroupEnsemble`).

A snapshot is a whole model (River trees and forests cannot be described as parameters), pickled: loading one
runs code, so nothing is loaded before its HMAC-SHA256 signature (with ``sync.key``, which every member holds)
is verified. Unsigned, tampered or foreign-key records, malformed ones and snapshots of another model kind are
refused and counted (``driftline_sync_refused_records{reason}``); at start, a topic holding another model kind
stops the service with the setting to change.

When: at the first save point after ``every_events`` labeled events or ``every_seconds`` (the save point first:
what a snapshot holds is learning whose offsets are committed, so a crash never puts an event in the group's
vote twice). A member that stops gracefully deletes its snapshot (a tombstone); one that dies keeps its last one
in the vote until it is ``max_snapshot_age_seconds`` old. A member that starts reads every member's latest
snapshot before its first prediction.

Wire format: ``MAGIC | HMAC-SHA256 (32 bytes) | header length (4 bytes, big-endian) | header (JSON) | zlib(pickle
of the learner's state)``; the signature covers everything after it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import pickle
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from driftline.errors import ConfigError
from driftline.learners.ensemble import GroupEnsemble, Peer, Score
from driftline.monitoring.metrics import SyncMetrics
from driftline.settings import SyncSettings
from driftline.stream.kafka.ranges import PartitionReader, drain
from driftline.stream.kafka.seam import TopicPartition
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.records import InboundRecord
from driftline.stream.sync import OtherKind

log = logging.getLogger(__name__)

MAGIC = b"driftline.snapshot/1\n"
FORMAT = 1
_TAG = 32
_LEN = 4
MAX_INFLATED = 1 << 30  # a snapshot's pickle, uncompressed
MIN_KEY_CHARS = 16


def max_record_bytes(max_snapshot_bytes: int) -> int:
    """The largest sync record in ensemble mode: a snapshot at its bound, with room for Kafka's record framing."""
    return max_snapshot_bytes + 65_536


def snapshot_topic_configs(max_snapshot_bytes: int) -> dict[str, str]:
    """The sync topic in ensemble mode: compacted (each member's latest snapshot), segments rolled every 10
    minutes so compaction can drop superseded snapshots, records up to a snapshot's bound."""
    return {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1",
            "max.message.bytes": str(max_record_bytes(max_snapshot_bytes))}


class SnapshotRefused(Exception):
    """A sync record that is not a snapshot this member may load; ``reason`` labels the refusal metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def seal(key: bytes, header: Mapping[str, Any], body: bytes) -> bytes:
    """A signed snapshot record."""
    head = json.dumps(dict(header), sort_keys=True).encode()
    signed = len(head).to_bytes(_LEN, "big") + head + body
    return MAGIC + hmac.new(key, signed, hashlib.sha256).digest() + signed


def unseal(key: bytes, blob: bytes | None) -> tuple[dict[str, Any], bytes]:
    """(header, body) of a signed snapshot record; SnapshotRefused (unsigned, signature, format) otherwise. The
    signature is checked before anything in the record is parsed."""
    if not blob or not blob.startswith(MAGIC):
        raise SnapshotRefused("unsigned", "not a signed driftline snapshot (no snapshot header)")
    tag, signed = blob[len(MAGIC):len(MAGIC) + _TAG], blob[len(MAGIC) + _TAG:]
    if not hmac.compare_digest(tag, hmac.new(key, signed, hashlib.sha256).digest()):
        raise SnapshotRefused("signature", "the snapshot's signature does not match sync.key (tampered, or "
                                           "signed with another key)")
    size = int.from_bytes(signed[:_LEN], "big")
    try:
        header = json.loads(signed[_LEN:_LEN + size])
    except ValueError as exc:
        raise SnapshotRefused("format", f"the snapshot's header is not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        got = header.get("format") if isinstance(header, dict) else header
        raise SnapshotRefused("format", f"snapshot format {got!r}; this member reads format {FORMAT}")
    return header, signed[_LEN + size:]


def inflate(body: bytes) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(body, MAX_INFLATED)
    except zlib.error as exc:
        raise SnapshotRefused("format", f"the snapshot's body is not zlib data: {exc}") from None
    if d.unconsumed_tail:
        raise SnapshotRefused("format", f"the snapshot inflates past {MAX_INFLATED} bytes")
    return out


class SnapshotSync:
    """The member's side of ``sync.mode ensemble``, driven by the run loop's sync step like `sync.Syncer`."""

    in_transaction = False  # sent after its save point committed (a snapshot may be large)

    def __init__(self, cfg: SyncSettings, ensemble: GroupEnsemble, key: str, *, topic: str, group: str,
                 kind: str, writer: RecordWriter, reader: PartitionReader, metrics: SyncMetrics,
                 audit: Callable[[dict[str, Any]], None] | None = None) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"sync.key: {len(key)} characters; a snapshot signing key needs at least "
                              f"{MIN_KEY_CHARS} (e.g. 32 random bytes, base64)")
        self.cfg = cfg
        self.ensemble = ensemble
        self.member = ensemble.member
        self._key = key.encode()
        self.topic = topic
        self.tp = TopicPartition(topic, 0)
        self.group = group
        self.kind = kind
        self.writer = writer
        self.reader = reader
        self.metrics = metrics
        self.audit = audit
        self._sent_updates = ensemble.updates
        self._last_send = time.monotonic()
        self._taken: tuple[bytes, int] | None = None  # (record, updates) taken at the save point
        self._other_kind = OtherKind(topic, kind, metrics, what="snapshot", must_match="model.name, task, classes")
        self.sent = 0

    # -- joining ---------------------------------------------------------------------------------------
    def join(self, timeout_s: float = 30.0) -> None:
        """Every member's latest snapshot on the topic, loaded before the first prediction. ConfigError when
        the topic holds another model kind."""
        low, end = self.reader.bounds([self.tp])[self.tp]
        records = list(drain(self.reader, {self.tp: low}, {self.tp: end}, timeout_s=timeout_s,
                             what=f"sync topic {self.topic}"))
        self.reader.start({self.tp: end})
        self._apply(records, joining=True)
        log.info("sync: member %s of %s (ensemble), serving the vote of %d member(s)", self.member, self.topic,
                 len(self.ensemble.peers) + 1)

    # -- the sync step ---------------------------------------------------------------------------------
    def labels_since(self) -> int:
        return self.ensemble.updates - self._sent_updates

    def due(self) -> bool:
        """Something learned since the last snapshot, and every_events of it or every_seconds since."""
        since = self.labels_since()
        return since > 0 and (since >= self.cfg.every_events
                              or time.monotonic() - self._last_send >= self.cfg.every_seconds)

    def prepare(self) -> None:
        """Take the snapshot now (the model at the save point that follows)."""
        own = self.ensemble
        score = own.own_score.score()
        header = {"format": FORMAT, "type": "snapshot", "member": self.member, "group": self.group,
                  "model": self.kind, "score": score.value, "scored": score.n, "updates": own.updates,
                  "version": own.version}
        body = zlib.compress(pickle.dumps(own.state_dict(), protocol=pickle.HIGHEST_PROTOCOL), 6)
        self._taken = (seal(self._key, header, body), own.updates)

    def send_update(self) -> bool:
        """Publish the snapshot `prepare` took (after its save point committed). Whether it was sent."""
        if self._taken is None:
            self.prepare()
        assert self._taken is not None
        record, updates = self._taken
        self._taken = None
        self._last_send = time.monotonic()
        if len(record) > self.cfg.max_snapshot_bytes:
            self._sent_updates = updates  # tried again after every_events more, not at every batch
            self.metrics.updates.labels("too_large").inc()
            log.error("sync: this member's snapshot is %d bytes, over sync.max_snapshot_bytes (%d): not sent; "
                      "the others keep voting with its previous one (raise the bound, or use a smaller model)",
                      len(record), self.cfg.max_snapshot_bytes)
            return False
        self.writer.send(self.topic, self.member.encode(), record, partition=0)
        failed = self.writer.flush(60.0).failed
        if failed:
            log.warning("sync: this member's snapshot was not acknowledged (%s); sent again later",
                        "; ".join(e for errs in failed.values() for e in errs[:1]))
            return False
        self._sent_updates = updates
        self.sent += 1
        m = self.metrics
        m.updates.labels("sent").inc()
        m.bytes.labels("sent").inc(len(record))
        m.round.set(self.sent)
        if self.audit is not None:
            self.audit({"action": "sync_snapshot", "member": self.member, "updates": updates, "bytes": len(record),
                        "snapshot": self.sent, "members": sorted([self.member, *self.ensemble.peers])})
        return True

    def incoming(self) -> bool:
        return False  # members' snapshots never touch this member's own model: nothing to put off

    def poll(self) -> None:
        """The snapshots published since: each member's newest loaded; members that left or went quiet leave
        the vote."""
        records = self.reader.poll(0.0)
        if records:
            self._apply(records, joining=False)
        else:
            self._expire()

    def leave(self) -> None:
        """A graceful stop: this member's snapshot leaves the topic (a tombstone) and every member's vote."""
        self.writer.send(self.topic, self.member.encode(), None, partition=0)
        self.writer.flush(30.0)

    def close(self) -> None:
        self.reader.close()
        self.writer.close(timeout=10)

    # -- records ---------------------------------------------------------------------------------------
    def _apply(self, records: list[InboundRecord], *, joining: bool) -> None:
        """Each other member's newest snapshot among ``records`` (a tombstone after it: the member left); when
        the newest is refused, the one before it."""
        by_member: dict[str, list[InboundRecord]] = {}
        for raw in records:
            who = (raw.key or b"").decode("utf-8", "replace")
            if who != self.member:
                by_member.setdefault(who, []).append(raw)
        for who, recs in sorted(by_member.items()):
            if recs[-1].value is None:
                if self.ensemble.peers.get(who) is not None:
                    self.ensemble.drop_peer(who)
                    log.info("sync: member %s left the group's vote", who)
                continue
            for raw in reversed(recs):
                if raw.value is None or self._take(raw, joining=joining):
                    break
        self._expire()

    def _take(self, raw: InboundRecord, *, joining: bool) -> bool:
        """Verify and load one snapshot into the vote; whether it was loaded."""
        t0 = time.perf_counter()
        self.metrics.bytes.labels("received").inc(len(raw.value or b""))
        where = f"{raw.topic}-{raw.partition}@{raw.offset}"
        try:
            header, body = unseal(self._key, raw.value)
            if header.get("model") != self.kind:
                self._other_kind.refuse(header, joining=joining)
                return False
            who = str(header["member"])
            state = pickle.loads(inflate(body))  # signed by a holder of sync.key: verified above
            ensemble = self.ensemble
            known = ensemble.peers.get(who)
            if known is not None:
                known.learner.load_state_dict(state)
                learner = known.learner
            else:
                learner = ensemble.own.spawn(state, detach=True)
            ensemble.set_peer(Peer(who, learner, Score(float(header["score"]), int(header["scored"])),
                                   int(header["updates"]), raw.timestamp_ms / 1000.0))
        except SnapshotRefused as exc:
            self.metrics.refused.labels(exc.reason).inc()
            log.error("sync: the record at %s is refused (%s): %s", where, exc.reason, exc)
            return False
        except ConfigError:
            raise
        except Exception as exc:  # a signed snapshot that does not load into this member's model
            self.metrics.refused.labels("format").inc()
            log.error("sync: the snapshot at %s does not load: %s: %s", where, type(exc).__name__, exc)
            return False
        m = self.metrics
        m.merge_seconds.observe(time.perf_counter() - t0)
        m.staleness.set_to_current_time()  # (members in the vote: set by `_expire`, after every read)
        return True

    def _expire(self) -> None:
        """Members whose newest snapshot is older than max_snapshot_age_seconds leave the vote."""
        now = time.time()
        for who, peer in list(self.ensemble.peers.items()):
            if now - peer.sent_at > self.cfg.max_snapshot_age_seconds:
                self.ensemble.drop_peer(who)
                log.warning("sync: member %s sent no snapshot for %.0f s: it leaves the vote", who,
                            now - peer.sent_at)
        self.metrics.members.set(len(self.ensemble.peers) + 1)
