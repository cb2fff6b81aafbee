"""The sync topic's rounds: decided by record order alone, the same on every member."""

from __future__ import annotations

import dataclasses

import pytest

from driftline.learners.mergeable import digest, mean_entry
from driftline.stream.sync_rounds import Rounds, SyncRecord


def _up(member: str, r: int, w: float, x: float) -> SyncRecord:
    return SyncRecord("update", member, r, w, {"w": mean_entry({"x": x})})


def test_a_round_closes_when_every_expected_member_has_sent() -> None:
    rounds = Rounds()
    assert rounds.apply(SyncRecord("hello", "a")) is None
    assert rounds.apply(SyncRecord("hello", "b")) is None
    assert rounds.apply(_up("b", 1, 3.0, 1.0)) is None
    closed = rounds.apply(_up("a", 1, 1.0, 5.0))
    assert closed is not None and closed.round == 1 and closed.members == ("a", "b") and not closed.timed_out
    assert closed.merged["w"].as_dict() == {"x": pytest.approx(2.0)}
    assert closed.closer == "a" and closed.digest == digest(closed.merged)
    assert rounds.round == 2 and rounds.expected == {"a", "b"}


def test_a_close_record_leaves_out_the_silent_and_their_late_update_is_stale() -> None:
    rounds = Rounds()
    for m in ("a", "b", "c"):
        rounds.apply(SyncRecord("hello", m))
    rounds.apply(_up("a", 1, 1.0, 1.0))
    rounds.apply(_up("b", 1, 1.0, 3.0))
    assert rounds.apply(SyncRecord("close", "c", 2)) is None  # not the open round: ignored
    closed = rounds.apply(SyncRecord("close", "a", 1))
    assert closed is not None and closed.timed_out and closed.members == ("a", "b")
    assert rounds.expected == {"a", "b"}
    assert rounds.apply(_up("c", 1, 9.0, 100.0)) is None and rounds.stale == 1  # too late for round 1
    # ... and a later update brings c back
    rounds.apply(_up("c", 2, 1.0, 0.0))
    assert rounds.expected == {"a", "b", "c"}


def test_bye_closes_a_round_that_waited_only_for_the_leaver() -> None:
    rounds = Rounds()
    rounds.apply(SyncRecord("hello", "a"))
    rounds.apply(SyncRecord("hello", "b"))
    rounds.apply(_up("a", 1, 1.0, 1.0))
    closed = rounds.apply(SyncRecord("bye", "b", 1))
    assert closed is not None and closed.members == ("a",) and closed.closer == "b"


def test_a_member_starting_from_a_merged_record_continues_the_same_rounds() -> None:
    """A member that starts from the newest merged record (and reads on after the record that closed its round:
    the next round's updates may come before the merged record) agrees with one that read everything."""
    def at(offset: int, rec: SyncRecord) -> SyncRecord:
        return dataclasses.replace(rec, offset=offset)

    log = [at(0, SyncRecord("hello", "a")), at(1, SyncRecord("hello", "b")), at(2, _up("a", 1, 2.0, 1.0)),
           at(3, _up("b", 1, 2.0, 3.0)), at(4, _up("a", 2, 3.0, 2.0))]
    old = Rounds()
    closed = [c for c in (old.apply(r) for r in log) if c is not None]
    assert len(closed) == 1 and closed[0].offset == 3 and closed[0].expected == ("a", "b")
    c = closed[0]
    merged = at(5, SyncRecord("merged", c.closer, 1, params=c.merged, members=c.members, digest=c.digest,
                              expected=c.expected, closed_at=c.offset))
    rest = [merged, at(6, _up("b", 2, 1.0, 10.0))]
    assert old.apply(rest[0]) is None and old.diverged == 0
    last_old = old.apply(rest[1])
    new = Rounds()
    tail = [merged, *(r for r in [*log, *rest] if r.offset > merged.closed_at)]
    last_new = [new.apply(r) for r in tail][-1]
    assert last_old is not None and last_new is not None and new.diverged == 0
    assert (last_new.round, last_new.members, last_new.digest) == (last_old.round, last_old.members, last_old.digest)


def test_a_merged_record_that_disagrees_is_counted_and_taken() -> None:
    rounds = Rounds()
    rounds.apply(SyncRecord("hello", "a"))
    closed = rounds.apply(_up("a", 1, 1.0, 1.0))
    assert closed is not None
    published = {"w": mean_entry({"x": 7.0})}
    rounds.apply(SyncRecord("merged", "a", 1, params=published, members=("a",), digest="0" * 64))
    assert rounds.diverged == 1
    # the closer's model is the group's: taken, so the next round starts from it on every member
    assert rounds.corrected == published and rounds.merged == published
