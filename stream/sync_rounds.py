"""The sync topic's rounds, decided by the topic's own order: every member reads the same records in the same
order (one partition) and runs this same state machine over them, so all members agree on which updates make a
round and compute the same merged model, with no coordinator and no clock.

Records (`SyncRecord`): ``hello`` (a member takes part from now on), ``update`` (its parameters for the open
round, weighted by the labeled events it learned since the model it last adopted), ``close`` (a member waited
``round_timeout_seconds`` for the others: the round closes with the updates before it), ``merged`` (the model of a
closed round, published by the member whose record closed it, with the members expected next and the offset of
the record that closed it: a new member takes its state from it and reads on from that offset, so it sees the
next round's updates that came before the merged record), ``bye`` (a member leaves). An update may say its
member's model was *adapted* since its last round (a drift policy replaced it: `reset`, a background swap): that
is a decision of the group, carried by the round: the round's model is the merge of the adapted members' updates
alone (their models, statistics included, as they are), and every member takes it, keeping only what it learned
after it sent. A round closes at the
first record after which every expected member has sent its update, or at the first ``close`` for it;
members missing from a round closed by ``close`` are expected no more, until they send again. Updates for a
round that is closed already are stale: left out, and their learning stays with their member (it is in its
next update).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from driftline.learners.mergeable import Params, digest, merge

log = logging.getLogger(__name__)

RecordType = Literal["hello", "update", "close", "merged", "bye"]


@dataclass(frozen=True)
class SyncRecord:
    type: RecordType
    member: str
    round: int = 0
    weight: float = 0.0
    params: Params | None = None
    members: tuple[str, ...] = ()  # merged: the members whose updates made the round
    digest: str = ""  # merged: the merged model's digest
    expected: tuple[str, ...] = ()  # merged: the members expected in the next round
    closed_at: int = -1  # merged: the offset of the record that closed the round
    offset: int = -1  # where this record is on the topic
    adapted: bool = False  # update: its member's model was adapted (replaced) since its last round


@dataclass(frozen=True)
class Closed:
    """A round that closed: the members whose updates made it (sorted), the merged model, who closed it."""

    round: int
    members: tuple[str, ...]
    weights: tuple[float, ...]
    merged: Params
    digest: str
    closer: str
    timed_out: bool
    expected: tuple[str, ...]  # the members expected in the next round
    offset: int  # of the record that closed it: a member that starts from this round reads on after it
    adapted: tuple[str, ...] = ()  # members whose adapted model became the group's in this round


@dataclass
class Rounds:
    """The state every member derives from the sync topic's records, in their order."""

    round: int = 1  # the open round
    expected: set[str] = field(default_factory=set)
    updates: dict[str, SyncRecord] = field(default_factory=dict)
    merged: Params = field(default_factory=dict)  # the last closed round's model ({}: none yet)
    merged_round: int = 0
    stale: int = 0  # updates that came after their round closed
    diverged: int = 0  # merged records whose digest differs from the one computed here
    corrected: Params | None = None  # the published model of the last diverged round, until the member adopts it

    def apply(self, rec: SyncRecord) -> Closed | None:
        """Apply the next record of the topic; the round it closes, if it closes one."""
        if rec.type == "hello":
            self.expected.add(rec.member)
            return None
        if rec.type == "bye":
            self.expected.discard(rec.member)
            return self._close_if_complete(rec)
        if rec.type == "update":
            if rec.round < self.round:
                self.stale += 1
                return None
            if rec.round > self.round:  # earlier records are gone (compacted): start again from this one
                log.warning("sync: an update for round %d while round %d is open (records missing from the "
                            "topic): continuing from round %d", rec.round, self.round, rec.round)
                self.round, self.updates = rec.round, {}
            self.updates[rec.member] = rec
            self.expected.add(rec.member)
            return self._close_if_complete(rec)
        if rec.type == "close":
            if rec.round == self.round and self.updates:
                return self._close(rec, timed_out=True)
            return None
        # merged
        if rec.round < self.merged_round:
            return None
        if rec.round == self.merged_round:
            if rec.digest != digest(self.merged) and rec.params is not None:
                # (e.g. members that started from different checkpoints when sync was turned on: their first
                # rounds' statistics differ) the closer's model is the group's: taken, so the members converge
                self.diverged += 1
                log.error("sync: round %d merged to %s here, its closer published %s: taking the published one",
                          rec.round, digest(self.merged)[:12], rec.digest[:12])
                self.corrected, self.merged = rec.params, rec.params
            return None
        # a round this state never saw close (it started reading after it): take it as published
        assert rec.params is not None
        self.merged, self.merged_round = rec.params, rec.round
        self.round, self.updates = rec.round + 1, {}
        self.expected = set(rec.expected)
        return None

    def _close_if_complete(self, rec: SyncRecord) -> Closed | None:
        if self.updates and self.expected <= set(self.updates):
            return self._close(rec, timed_out=False)
        return None

    def _close(self, rec: SyncRecord, *, timed_out: bool) -> Closed:
        members = tuple(sorted(self.updates))
        ups = [self.updates[m] for m in members]
        adapted = tuple(m for m in members if self.updates[m].adapted)
        if adapted:  # the group adapts: the adapted members' models (absolute) are the round's model
            merged = merge({}, [(self.updates[m].weight, self.updates[m].params or {}) for m in adapted])
        else:
            merged = merge(self.merged, [(u.weight, u.params or {}) for u in ups])
        if timed_out:
            self.expected = set(members)
        closed = Closed(self.round, members, tuple(u.weight for u in ups), merged, digest(merged), rec.member,
                        timed_out, tuple(sorted(self.expected)), rec.offset, adapted)
        self.merged, self.merged_round = merged, self.round
        self.round += 1
        self.updates = {}
        return closed
