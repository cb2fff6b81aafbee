"""One model for the consumer group (``sync.mode: average``): the members learn locally and merge over a Kafka
topic, in rounds (`stream.sync_rounds`), by federated averaging (`learners.mergeable`).

The sync step of the run loop: when a round is due, a save point (what the member sends reflects only learning
whose offsets are committed), then the member's update to the sync topic; between batches the topic is read and
every round that closes is merged and adopted at once: the merged model plus what this member learned since it
sent its update (not yet in the group's model). The member whose record closed a round publishes the merged model
(``merged``): where a new member starts, and a check (its digest) for every other member.

Nothing executable travels: parameters are float64 arrays with a JSON header (`learners.mergeable.encode`).
A record of another model kind or format is refused and counted; at start, a topic whose model is another kind
stops the service with the setting to change.

What a crash costs: a member SIGKILLed loses its learning since its last save point (those events are learned
again by the partitions' next owner), never more; an update sent is in the group's model once. The checkpoint
holds the adopted model, the merged model it is based on, and the round an update was being sent for, so a
restart knows whether that update made its round (if it cannot tell, the learning it carried is dropped rather
than counted twice, and counted in ``driftline_sync_unsynced_labels_dropped``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from driftline.errors import ConfigError
from driftline.learners.base import Learner
from driftline.learners.capabilities import Mergeable
from driftline.learners.mergeable import FormatError, Params, contribution, decode, encode, rebase
from driftline.learners.privacy import epsilon, privatize, require_accountant
from driftline.monitoring.metrics import SyncMetrics
from driftline.settings import SyncSettings
from driftline.stream.kafka.ranges import PartitionReader, drain
from driftline.stream.kafka.seam import TopicPartition
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.observers import Observer
from driftline.stream.records import InboundRecord
from driftline.stream.sync_rounds import Closed, Rounds, SyncRecord

log = logging.getLogger(__name__)

TYPES = ("hello", "update", "close", "merged", "bye")
# compacted (a member's latest record, the latest close and merged model are kept); recent history stays whole
# for an hour, so members that start read the rounds since the newest merged model as they happened
SYNC_TOPIC = {"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"}
JOIN_WINDOW = 256  # records read back from the end at start, growing until a merged record is found


def _encode_params(params: Params) -> bytes:
    return encode({}, params)


def _decode_params(blob: bytes) -> Params:
    _, params = decode(blob)
    return params or {}


class SyncState(Observer):
    """The sync part of the checkpoint: the merged model this member last adopted (its reference: what it
    learned since is measured from it) with its round and the learner's update count then; and the update this
    member sends right after this save point, until its round closes (round, parameters, update count)."""

    key: ClassVar[str] = "sync"

    def __init__(self) -> None:
        self.ref: Params | None = None  # None: not set yet (the model this member starts from)
        self.ref_round = 0
        self.ref_updates = 0
        self.pub_round = 0  # 0: no update outstanding
        self.pub: Params | None = None
        self.pub_updates = 0
        self.private_rounds = 0  # updates sent with sync.privacy (what the privacy budget counts)
        self.pub_adapted = False  # the update's model was adapted by a drift policy here since the last round

    def clear_pub(self) -> None:
        self.pub_round, self.pub, self.pub_updates, self.pub_adapted = 0, None, 0, False

    def state_dict(self) -> Any:
        return {"ref": _encode_params(self.ref) if self.ref is not None else None, "ref_round": self.ref_round,
                "ref_updates": self.ref_updates, "pub_round": self.pub_round,
                "pub": _encode_params(self.pub) if self.pub is not None else None, "pub_updates": self.pub_updates,
                "private_rounds": self.private_rounds, "pub_adapted": self.pub_adapted}

    def load_state_dict(self, state: Any) -> None:
        self.ref = _decode_params(state["ref"]) if state.get("ref") is not None else None
        self.ref_round = int(state["ref_round"])
        self.ref_updates = int(state["ref_updates"])
        self.pub_round = int(state["pub_round"])
        self.pub = _decode_params(state["pub"]) if state.get("pub") is not None else None
        self.pub_updates = int(state["pub_updates"])
        self.private_rounds = int(state.get("private_rounds", 0))
        self.pub_adapted = bool(state.get("pub_adapted", False))


class GroupSync(Protocol):
    """The member's side of a sync mode, driven by the run loop's sync step (`Syncer`: average;
    `stream.snapshots.SnapshotSync`: ensemble)."""

    # True: with kafka.exactly_once, what it sends goes in the save point's transaction; False: right after it
    in_transaction: bool

    def join(self, timeout_s: float = 30.0) -> None: ...

    def incoming(self) -> bool:
        """Whether records wait on the sync topic (read now and kept for the next `poll`) whose handling may
        read or load the model (a round that closes): the run loop puts that off while the model trains a
        window."""
        ...

    def poll(self) -> None: ...

    def due(self) -> bool: ...

    def prepare(self) -> None: ...

    def send_update(self) -> bool: ...

    def labels_since(self) -> int: ...

    def leave(self) -> None: ...

    def close(self) -> None: ...


class Syncer:
    def __init__(self, cfg: SyncSettings, learner: Learner, model: Mergeable, state: SyncState, *, topic: str,
                 group: str, member: str, writer: RecordWriter, reader: PartitionReader, metrics: SyncMetrics,
                 update_writer: RecordWriter | None = None, owned: Sequence[RecordWriter] = (),
                 in_transaction: bool = False, audit: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.cfg = cfg
        self.learner = learner
        self.model = model
        self.state = state
        self.topic = topic
        self.tp = TopicPartition(topic, 0)
        self.group = group
        self.member = member
        self.writer = writer  # hello, close, merged, bye
        self.update_writer = update_writer or writer  # updates (kafka.exactly_once: the batch's transaction)
        self.owned = tuple(owned)  # producers made for this syncer (its records, its audit): closed with it
        self.in_transaction = in_transaction  # updates go in the save point's transaction (GroupSync)
        self.reader = reader
        self.metrics = metrics
        self.audit = audit
        self.rounds = Rounds()
        self._unread: list[InboundRecord] | None = None  # read by incoming(), handled by the next poll()
        self._waiting = False  # this member's update (state.pub_round) is on the topic, its round still open
        self._sent_at = 0.0
        self._close_sent = False
        self._last_send = time.monotonic()
        self._other_kind = OtherKind(topic, model.sync_kind, metrics, what="model",
                                     must_match="model.name, task, classes, scale, one_hot")
        # the model version this syncer last set: another one means a drift policy adapted the model here since
        self._version_set: int | None = None
        # the privacy noise: seeded by sync.privacy.seed (tests) or the operating system's entropy
        self._rng = np.random.default_rng(cfg.privacy.seed)
        self.epsilon = 0.0  # the privacy budget spent (sync.privacy)
        if cfg.privacy.clip is not None:
            require_accountant()
            self._spend(state.private_rounds)

    # -- joining ---------------------------------------------------------------------------------------
    def join(self, timeout_s: float = 30.0) -> None:
        """Read the sync topic's recent records (back to the newest merged model), adopt the group's model,
        and say hello. A topic that holds another model kind stops the service (ConfigError)."""
        st = self.state
        if st.ref is None:  # a fresh member: the model it starts from is its reference
            st.ref = self.model.sync_params()
            st.ref_updates = self.learner.updates
        self.rounds = Rounds(round=st.ref_round + 1, merged=dict(st.ref), merged_round=st.ref_round)
        low, end = self.reader.bounds([self.tp])[self.tp]
        records, merged_by_round = self._tail(low, end, timeout_s)
        pub = st.pub_round
        # whether the update sent before a restart made its round (its round's merged record says, if read)
        included: bool | None = self.member in merged_by_round[pub] if pub in merged_by_round else None
        for rec in records:
            closed = self.rounds.apply(rec)
            if closed is not None and closed.round == pub:
                included = self.member in closed.members
            if rec.type == "merged" and rec.round == pub and included is None:
                included = self.member in rec.members
        self.reader.start({self.tp: end})
        if pub and included is None:
            if self.rounds.round == pub and self.member in self.rounds.updates:
                self._waiting, self._sent_at = True, time.monotonic()  # in the open round: merged when it closes
            elif self.rounds.round <= pub:  # the save point was written, the update never sent
                st.clear_pub()
            else:  # its round closed before the records read here: it may be in the group's model already
                dropped = st.pub_updates - st.ref_updates
                self.metrics.unsynced_lost.inc(dropped)
                log.warning("sync: cannot tell whether the update of round %d (before the restart) was merged: "
                            "its %d labeled events are dropped rather than counted twice", pub, dropped)
                included = True
        if not self._waiting and self.rounds.merged_round > st.ref_round:
            self._adopt_latest(included=bool(included))
        if self._version_set is None:  # the group numbers the model's versions from now on: round + 1
            self.learner.set_version(self.rounds.merged_round + 1)
            self._version_set = self.learner.version
        self._send(self.writer, "hello", 0)
        log.info("sync: member %s of %s, %s; group model at round %d", self.member, self.topic,
                 f"{len(self.rounds.expected)} members known" if self.rounds.expected else "the first member",
                 self.rounds.merged_round)

    def _tail(self, low: int, end: int, timeout_s: float) -> tuple[list[SyncRecord], dict[int, tuple[str, ...]]]:
        """The newest merged record, then the records after the one that closed its round, to ``end`` (every
        record when there is no merged one); and the members of every round whose merged record was read."""
        window = JOIN_WINDOW
        while True:
            start = max(low, end - window)
            raw = list(drain(self.reader, {self.tp: start}, {self.tp: end}, timeout_s=timeout_s,
                             what=f"sync topic {self.topic}"))
            records = [r for r in (self._decode(x, joining=True) for x in raw) if r is not None]
            merged = [r for r in records if r.type == "merged"]
            members = {r.round: r.members for r in merged}
            if merged and (merged[-1].closed_at >= start or start == low):
                last = merged[-1]
                return [last, *(r for r in records if r.offset > last.closed_at)], members
            if start == low:
                return records, members
            window *= 4

    def _adopt_latest(self, *, included: bool) -> None:
        st = self.state
        now = self.model.sync_params()
        ref = (st.pub or {}) if included and st.pub is not None else (st.ref or {})
        self.model.load_sync_params(rebase(self.rounds.merged, now, ref))
        if included and st.pub is not None:
            st.ref_updates = st.pub_updates
        st.clear_pub()
        st.ref, st.ref_round = self.rounds.merged, self.rounds.merged_round
        self.metrics.round.set(self.rounds.merged_round)
        self.learner.set_version(self.rounds.merged_round + 1)
        self._version_set = self.learner.version
        self.metrics.staleness.set_to_current_time()
        log.info("sync: adopted the group model of round %d", self.rounds.merged_round)

    # -- the sync step ---------------------------------------------------------------------------------
    def labels_since(self) -> int:
        """Labeled events learned here since the merged model this member last adopted (its update's weight)."""
        return self.learner.updates - self.state.ref_updates

    def due(self) -> bool:
        """Whether this member sends an update now: not waiting on its last one, and every_events labeled events
        or every_seconds since its last (with sync.privacy: only when it learned something since)."""
        if self._waiting:
            return False
        if self.cfg.privacy.clip is not None and self.labels_since() == 0:
            return False  # a private update spends privacy budget: none while this member learns nothing
        return (self.labels_since() >= self.cfg.every_events
                or time.monotonic() - self._last_send >= self.cfg.every_seconds)

    def prepare(self) -> None:
        """Before the save point that precedes an update: the update is taken now (the model at the save
        point), and the checkpoint records it with its round."""
        st = self.state
        st.pub_round, st.pub, st.pub_updates = self.rounds.round, self.model.sync_params(), self.learner.updates
        st.pub_adapted = self._version_set is not None and self.learner.version != self._version_set

    def send_update(self) -> bool:
        """The update `prepare` took, for the open round (after the save point committed its learning): the
        parameters, the statistics learned since the reference, the weight. Whether it was sent."""
        st = self.state
        if st.pub is None or st.pub_round != self.rounds.round:
            self.prepare()  # (a round closed in between: the update is for the open one)
        assert st.pub is not None
        self._last_send = time.monotonic()
        # an adapted model goes as it is (statistics included): the round makes it the group's
        params = contribution(st.pub, {} if st.pub_adapted else st.ref or {})
        weight = float(st.pub_updates - st.ref_updates)
        dp = self.cfg.privacy
        if dp.clip is not None:  # clipped and noised here: only the noisy update leaves this member
            params, norm = privatize(params, st.ref or {}, clip=dp.clip, noise_multiplier=dp.noise_multiplier,
                                     rng=self._rng)
            weight = 1.0  # every member weighs the same: the count of its labeled events is not sent
            self.metrics.update_norm.observe(norm)
        if not self._send(self.update_writer, "update", st.pub_round, weight=weight, params=params,
                          adapted=st.pub_adapted):
            st.clear_pub()
            return False
        if dp.clip is not None:
            st.private_rounds += 1
            self._spend(st.private_rounds)
        self.metrics.updates.labels("sent").inc()
        self._waiting, self._sent_at, self._close_sent = True, time.monotonic(), False
        return True

    def incoming(self) -> bool:
        self._unread = [*(self._unread or ()), *self.reader.poll(0.0)]
        return bool(self._unread)

    def poll(self) -> None:
        """Read what the sync topic has now (what `incoming` read, if it was asked); merge and adopt every round
        that closes; close the open round when this member has waited round_timeout_seconds for the others."""
        unread, self._unread = self._unread if self._unread is not None else self.reader.poll(0.0), None
        for raw in unread:
            rec = self._decode(raw, joining=False)
            if rec is None:
                continue
            own = self.rounds.merged
            closed = self.rounds.apply(rec)
            if closed is not None:
                self._adopt(closed)
            elif self.rounds.corrected is not None:  # the closer's model of the last round, not ours: take it
                self.model.load_sync_params(rebase(self.rounds.corrected, self.model.sync_params(), own))
                self.state.ref, self.rounds.corrected = self.rounds.corrected, None
        if self.rounds.diverged:
            self.metrics.diverged.inc(self.rounds.diverged)
            self.rounds.diverged = 0
        if (self._waiting and not self._close_sent
                and time.monotonic() - self._sent_at >= self.cfg.round_timeout_seconds):
            missing = sorted(self.rounds.expected - set(self.rounds.updates))
            log.warning("sync: round %d waited %.1fs for %s: closing it without them", self.rounds.round,
                        self.cfg.round_timeout_seconds, ", ".join(missing))
            self._close_sent = self._send(self.writer, "close", self.rounds.round)

    def _adopt(self, closed: Closed) -> None:
        t0 = time.perf_counter()
        st = self.state
        outstanding = self._waiting and st.pub_round == closed.round
        mine = outstanding and self.member in closed.members
        now = self.model.sync_params()
        ref = (st.pub or {}) if mine else (st.ref or {})
        self.model.load_sync_params(rebase(closed.merged, now, ref))
        if mine:
            st.ref_updates = st.pub_updates
            self.metrics.updates.labels("merged").inc()
        elif outstanding:
            self.metrics.updates.labels("stale").inc()
            log.info("sync: round %d closed without this member's update: its learning goes into the next",
                     closed.round)
        if outstanding:
            st.clear_pub()
            self._waiting = False
        st.ref, st.ref_round = closed.merged, closed.round
        m = self.metrics
        m.round.set(closed.round)  # beside the version it numbers
        self.learner.set_version(closed.round + 1)
        self._version_set = self.learner.version
        m.merge_seconds.observe(time.perf_counter() - t0)
        m.rounds.labels("timed_out" if closed.timed_out else "complete").inc()
        if closed.adapted:
            m.group_adaptations.inc()
            log.info("sync: round %d carries the adaptation of %s: the group takes its model", closed.round,
                     ", ".join(closed.adapted))
        m.members.set(len(closed.members))
        m.staleness.set_to_current_time()
        if closed.closer == self.member:
            self._send(self.writer, "merged", closed.round, params=closed.merged, closed=closed)
        if self.audit is not None:
            self.audit({"action": "sync_round", "round": closed.round, "members": list(closed.members),
                        "weights": list(closed.weights), "digest": closed.digest, "timed_out": closed.timed_out,
                        "closer": closed.closer, "member": self.member,
                        **({"adapted_by": list(closed.adapted)} if closed.adapted else {}),
                        **({"epsilon": self.epsilon, "delta": self.cfg.privacy.delta}
                           if self.cfg.privacy.clip is not None else {})})

    def _spend(self, rounds: int) -> None:
        """The privacy budget after ``rounds`` private updates (Opacus's accountant), kept and exported."""
        dp = self.cfg.privacy
        self.epsilon = epsilon(rounds, dp.noise_multiplier, dp.delta)
        self.metrics.epsilon.set(self.epsilon)

    def leave(self) -> None:
        """A graceful stop: the group expects this member no more (its partitions' next owner sends for them)."""
        self._send(self.writer, "bye", self.rounds.round)

    def close(self) -> None:
        self.reader.close()
        for writer in self.owned:  # flushed and closed
            writer.close(timeout=10)

    # -- records ---------------------------------------------------------------------------------------
    def _send(self, writer: RecordWriter, kind: str, round_: int, *, weight: float = 0.0,
              params: Params | None = None, closed: Closed | None = None, adapted: bool = False) -> bool:
        header: dict[str, Any] = {"type": kind, "member": self.member, "group": self.group, "round": round_,
                                  "weight": weight, "model": self.model.sync_kind,
                                  **({"adapted": True} if adapted else {})}
        if closed is not None:
            header.update(members=list(closed.members), digest=closed.digest, expected=list(closed.expected),
                          closed_at=closed.offset)
        payload = encode(header, params)
        key = {"close": "close", "merged": "merged"}.get(kind, self.member)
        writer.send(self.topic, key.encode(), payload, partition=0)
        if writer is self.writer:  # (the transactional writer's records are committed with the batch)
            failed = writer.flush(30.0).failed
            if failed:
                log.warning("sync: the %s record of round %d was not acknowledged (%s); sent again later", kind,
                            round_, "; ".join(e for errs in failed.values() for e in errs[:1]))
                return False
        self.metrics.bytes.labels("sent").inc(len(payload))
        return True

    def _decode(self, raw: InboundRecord, *, joining: bool) -> SyncRecord | None:
        value = raw.value or b""
        self.metrics.bytes.labels("received").inc(len(value))
        try:
            header, params = decode(value)
            kind = header.get("type")
            if kind not in TYPES:
                raise FormatError(f"unknown sync record type {kind!r}")
            if header.get("model") != self.model.sync_kind:
                self._other_kind.refuse(header, joining=joining)
                return None
            return SyncRecord(type=kind, member=str(header["member"]), round=int(header["round"]),
                              weight=float(header.get("weight", 0.0)), params=params,
                              members=tuple(str(m) for m in header.get("members", ())),
                              digest=str(header.get("digest", "")),
                              expected=tuple(str(m) for m in header.get("expected", ())),
                              closed_at=int(header.get("closed_at", -1)), offset=raw.offset,
                              adapted=bool(header.get("adapted", False)))
        except (FormatError, KeyError, TypeError, ValueError) as exc:
            self.metrics.refused.labels("format").inc()
            log.error("sync: the record at %s-%d@%d is refused: %s", raw.topic, raw.partition, raw.offset, exc)
            return None


class OtherKind:
    """Records of another model kind on the sync topic (a member whose config differs): at start a ConfigError
    naming both models and what must match; while running, refused, counted and logged once per member and kind."""

    def __init__(self, topic: str, kind: str, metrics: SyncMetrics, *, what: str, must_match: str) -> None:
        self.topic, self.kind, self.metrics = topic, kind, metrics
        self.what, self.must_match = what, must_match  # "model" / "snapshot"; the settings that must be equal
        self._seen: set[tuple[str, str]] = set()

    def refuse(self, header: Mapping[str, Any], *, joining: bool) -> None:
        who, theirs = str(header.get("member")), str(header.get("model"))
        if joining:
            raise ConfigError(
                f"sync topic {self.topic!r} holds the {self.what} of member {who!r}: {theirs}; this member's is "
                f"{self.kind}. Members of one sync topic need the same model config ({self.must_match}): fix the "
                "config, or name another sync.topic")
        self.metrics.refused.labels("model_kind").inc()
        if (who, theirs) not in self._seen:
            self._seen.add((who, theirs))
            log.error("sync: member %s on %s has another model (%s; this member's is %s): its records are "
                      "refused", who, self.topic, theirs, self.kind)
