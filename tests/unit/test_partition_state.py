"""Save points and partitions that move (no broker: an in-memory changelog and a fake consumer): offsets are
committed only with the state that reflects them; an assigned partition starts from the group's committed
offset with the newest state that has seen that far; revoked partitions are saved, committed and forgotten;
pending label joins and dedup ids travel to the next owner as JSON, chunked, and a torn snapshot is refused."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import CheckpointSettings, ModelSettings
from driftline.stream.checkpointing import Checkpointer
from driftline.stream.kafka.seam import TopicPartition
from driftline.stream.kafka.writer import FlushResult
from driftline.stream.labels import LabelJoin
from driftline.stream.observers import Ledger
from driftline.stream.partition_state import Changelog
from driftline.stream.pipeline import build_processor, partitioned
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord
from driftline.stream.sink import REASON_HEADER, OutputSink

IN, LABELS, LOG = "in", "labels", "state"


class Topics:
    """An in-memory Kafka: a writer whose sends land in partitions, and a reader of them."""

    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[InboundRecord]] = {}
        self.flushes = 0

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        tp = TopicPartition(topic, partition or 0)
        log = self.logs.setdefault(tp, [])
        log.append(InboundRecord(topic, tp.partition, len(log), 0, key, value, tuple(headers or ())))

    def flush(self, timeout: float | None = None) -> FlushResult:
        self.flushes += 1
        return FlushResult(sent=0)

    def partitions_for(self, topic: str) -> int:
        return 4

    def close(self, timeout: float = 30.0) -> None:
        pass

    def read(self, tps: Sequence[TopicPartition]) -> list[InboundRecord]:
        return [r for tp in tps for r in self.logs.get(tp, [])]

    def dead(self) -> list[bytes]:
        return [dict(r.headers)[REASON_HEADER] for tp, log in self.logs.items() if tp.topic == "dlq" for r in log]


class Group:
    """The group's committed offsets, and a consumer of one member."""

    def __init__(self) -> None:
        self.committed_offsets: dict[TopicPartition, int] = {}


class FakeConsumer:
    def __init__(self, group: Group) -> None:
        self.group = group
        self.sought: dict[TopicPartition, int] = {}

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        return {tp: self.group.committed_offsets.get(tp) for tp in partitions}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.sought[partition] = offset

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None, *, wait: bool = True) -> None:
        assert offsets is not None
        self.group.committed_offsets.update(offsets)

    def assignment(self) -> set[TopicPartition]:
        return set()

    def paused(self) -> set[TopicPartition]:
        return set()

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        pass

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        pass

    def poll(self, timeout_ms: int) -> list[InboundRecord]:
        return []

    def subscribe(self, topics: Sequence[str], **_: Any) -> None:
        pass

    def lag(self) -> dict[TopicPartition, int]:
        return {}

    def close(self) -> None:
        pass


class Member:
    """One instance: its pipeline (label join + dedup window), checkpointer and consumer."""

    def __init__(self, kafka: Topics, group: Group, directory: Path | None = None, *, chunk_bytes: int = 500_000,
                 every_events: int = 1000, exactly_once: bool = False, owner: str = "") -> None:
        self.kafka, self.registry = kafka, CollectorRegistry()
        learner = build_learner(ModelSettings(name="GaussianNB"))
        self.metrics = ServiceMetrics(self.registry, model=learner.name, task=learner.task)
        sink = OutputSink(kafka, "pred", "dlq", self.metrics)
        self.sink = sink
        self.transactions: list[str] = []
        self.proc: EventProcessor = build_processor(learner, sink, self.metrics, rolling_window=10,
                                                    max_payload_bytes=10_000, dedup_window=100,
                                                    join=LabelJoin(3_600_000, 1000), labels_topic=LABELS)
        self.consumer = FakeConsumer(group)
        self.commits_land = True  # False: the process "dies" between its save point's state and its commit
        changelog = Changelog(LOG, kafka, kafka.read, chunk_bytes=chunk_bytes)
        self.ck = Checkpointer(CheckpointSettings(directory=str(directory) if directory else None,
                                                  every_events=every_events),
                               self.proc, self.metrics, parts=partitioned(self.proc), changelog=changelog,
                               flush=sink.flush, commit=self._commit, member="m", owner=owner,
                               begin=(lambda: self.transactions.append("begin")) if exactly_once else None)

    def _commit(self, offsets: Mapping[TopicPartition, int]) -> bool:
        if self.commits_land:
            self.consumer.commit(offsets)
        return self.commits_land

    def process(self, records: list[InboundRecord]) -> None:
        self.proc.process(records)
        self.ck.advance(records)

    def assign(self, *partitions: int) -> None:
        self.ck.assigned(self.consumer, [TopicPartition(t, p) for p in partitions for t in (IN, LABELS)])

    def learned(self) -> int:
        return self.proc.require(Ledger).learned

    def source(self, state: str) -> float | None:
        return self.registry.get_sample_value("driftline_partition_assignments_total", {"state": state})


def event(p: int, offset: int, eid: str, label: int | None = None) -> InboundRecord:
    body: dict[str, Any] = {"id": eid, "features": {"x": float(offset)}}
    if label is not None:
        body["label"] = label
    return InboundRecord(IN, p, offset, 1_000 + offset, eid.encode(), json.dumps(body).encode())


def label(p: int, offset: int, eid: str, value: int) -> InboundRecord:
    body = json.dumps({"id": eid, "label": value}).encode()
    return InboundRecord(LABELS, p, offset, 1_000 + offset, eid.encode(), body)


def test_offsets_are_committed_at_save_points_only_and_are_what_the_state_reflects() -> None:
    kafka, group = Topics(), Group()
    a = Member(kafka, group)
    a.assign(0)
    a.process([event(0, 0, "e0", 1), event(0, 1, "e1", 0)])
    assert group.committed_offsets == {}  # processed, not saved: nothing committed
    assert a.ck.save("interval")
    assert group.committed_offsets == {TopicPartition(IN, 0): 2}
    assert not a.ck.save("interval")  # nothing new


def test_pending_labels_and_dedup_ids_follow_their_partition_to_the_next_owner() -> None:
    kafka, group = Topics(), Group()
    a = Member(kafka, group)
    a.assign(0, 1)
    a.process([event(1, 0, "wait"), label(1, 0, "early", 1), event(1, 1, "seen", 0), event(0, 0, "other", 1)])
    a.ck.revoked([TopicPartition(t, p) for p in (0, 1) for t in (IN, LABELS)])  # saved, committed, forgotten
    assert group.committed_offsets == {TopicPartition(IN, 0): 1, TopicPartition(IN, 1): 2,
                                       TopicPartition(LABELS, 1): 1}
    assert not a.ck.parts[1].partitions() and not a.ck.offsets  # type: ignore[attr-defined]
    # the gauges say so at once (no batch may come after a rebalance: a stale count would wait forever)
    pending = a.registry.get_sample_value
    assert pending("driftline_pending_labels", {"side": "predictions"}) == 0
    assert pending("driftline_pending_labels", {"side": "labels"}) == 0

    b = Member(kafka, group)
    b.assign(1)
    assert b.source("changelog") == 1
    assert b.registry.get_sample_value("driftline_pending_labels", {"side": "predictions"}) == 1  # "wait" came along
    assert b.ck.offsets == {TopicPartition(IN, 1): 2, TopicPartition(LABELS, 1): 1}  # the committed offsets
    b.process([label(1, 1, "wait", 1), event(1, 2, "early", None), event(1, 3, "seen", 1)])
    assert b.learned() == 2  # the prediction A made, labeled at B; the label that waited at A, its event at B
    assert kafka.dead() == [b"duplicate_id"]  # "seen" was in A's dedup window of partition 1
    assert "other" not in b.proc.labels.join.pending  # type: ignore[union-attr]  # partition 0 did not come along


def test_a_restarted_instance_resumes_from_its_own_checkpoint_only_when_it_has_seen_the_committed_offset(
        tmp_path: Path) -> None:
    kafka, group = Topics(), Group()
    a = Member(kafka, group, tmp_path)
    a.assign(0, 1)
    a.process([event(0, 0, "x0"), event(1, 0, "y0")])
    a.ck.save("interval")  # then A dies; B takes partition 1 over and moves it on
    b = Member(kafka, group)
    b.assign(1)
    b.process([event(1, i, f"y{i}") for i in range(1, 7)])
    b.ck.save("interval")
    assert group.committed_offsets[TopicPartition(IN, 1)] == 7

    again = Member(kafka, group, tmp_path)  # A restarts and is given both partitions
    again.ck.restore(again.consumer.committed)
    again.assign(0, 1)
    assert again.source("checkpoint") == 1 and again.source("changelog") == 1
    assert again.ck.offsets == {TopicPartition(IN, 0): 1, TopicPartition(IN, 1): 7}
    pending = again.proc.labels.join.pending  # type: ignore[union-attr]
    assert set(pending) == {"x0", *(f"y{i}" for i in range(7))}  # y1..y6 waited at B


def test_state_behind_the_group_is_not_used_and_partitions_not_assigned_are_forgotten(tmp_path: Path) -> None:
    kafka, group = Topics(), Group()
    a = Member(kafka, group, tmp_path)
    a.assign(0, 1)
    a.process([event(0, 0, "x0"), event(1, 0, "y0")])
    a.ck.save("interval")
    group.committed_offsets[TopicPartition(IN, 0)] = 9  # moved on by a member whose snapshot never landed
    again = Member(kafka, group, tmp_path)
    again.ck.restore(again.consumer.committed)
    again.assign(0)
    assert again.source("none") == 1
    assert again.proc.labels.join.pending == {}  # type: ignore[union-attr]  # x0: behind; y0: not ours
    assert again.ck.offsets == {TopicPartition(IN, 0): 9}


def test_large_snapshots_are_chunked_a_torn_write_leaves_the_previous_and_a_corrupt_one_is_refused() -> None:
    kafka, group = Topics(), Group()
    a = Member(kafka, group, chunk_bytes=300)
    a.assign(0)
    a.process([event(0, i, f"e{i}") for i in range(20)])
    a.ck.save("interval")
    for i in (20, 21):
        a.process([event(0, i, f"e{i}")])
        a.ck.save("interval")
    log = kafka.logs[TopicPartition(LOG, 0)]
    assert len([r for r in log if r.key and b"." in r.key and r.value]) > 20
    assert [r for r in log if r.value is None]  # the first snapshot's chunks, once two newer ones exist

    kafka.send(LOG, b"0.ffff-9.0", b'{"format": 1, "partition": 0, ', 0)  # a crash after one chunk of a fourth
    b = Member(kafka, group)
    b.assign(0)
    assert b.source("changelog") == 1 and len(b.proc.labels.join.pending) == 22  # type: ignore[union-attr]

    newest = [r for r in log if r.key and r.key.endswith(b".1") and r.value][-1]
    kafka.send(LOG, newest.key, b"garbage", 0)  # the newest snapshot corrupt: the one before is 21, not 22
    c = Member(kafka, group)
    c.assign(0)
    assert c.source("none") == 1 and c.proc.labels.join.pending == {}  # type: ignore[union-attr]
    group.committed_offsets[TopicPartition(IN, 0)] = 21  # had the newest save point's commit not landed
    d = Member(kafka, group)
    d.assign(0)
    assert d.source("changelog") == 1 and len(d.proc.labels.join.pending) == 21  # type: ignore[union-attr]


def test_lost_partitions_are_not_written_and_come_back_with_their_state_only_if_nobody_committed_meanwhile() -> None:
    kafka, group = Topics(), Group()
    a = Member(kafka, group)
    a.assign(0, 1)
    a.process([event(0, 0, "e0"), event(1, 0, "f0")])
    a.ck.lost([TopicPartition(t, p) for p in (0, 1) for t in (IN, LABELS)])  # evicted (the broker was away)
    assert kafka.logs.get(TopicPartition(LOG, 0)) is None and group.committed_offsets == {}
    group.committed_offsets[TopicPartition(IN, 1)] = 5  # partition 1 was moved on by another member meanwhile
    a.consumer.sought.clear()
    a.assign(0, 1)
    assert a.source("checkpoint") == 1  # partition 0: back, nothing committed since: from its own position
    assert a.consumer.sought == {TopicPartition(IN, 0): 1}
    assert set(a.proc.labels.join.pending) == {"e0"}  # type: ignore[union-attr]  # f0 went with partition 1
    assert a.ck.offsets == {TopicPartition(IN, 0): 1, TopicPartition(IN, 1): 5}


@pytest.mark.parametrize("snapshot", [b"{}", b'{"format": 2}', b"\xff"])
def test_an_unreadable_manifest_is_refused_with_its_reason(snapshot: bytes, caplog: pytest.LogCaptureFixture) -> None:
    kafka, group = Topics(), Group()
    kafka.send(LOG, b"0", snapshot, 0)
    m = Member(kafka, group)
    m.assign(0)
    assert m.source("none") == 1
    assert "cannot be used (unreadable manifest" in caplog.text


def test_a_save_point_whose_commit_did_not_land_is_not_used_by_the_next_owner() -> None:
    """The owner dies after its snapshot, before its commit: the next owner resumes at the committed offset
    with the snapshot before, and learns the events since exactly once (the dead model's learning of them
    died with it)."""
    kafka, group = Topics(), Group()
    a = Member(kafka, group)
    a.assign(0)
    a.process([event(0, 0, "e0"), event(0, 1, "e1")])
    a.ck.save("interval")
    a.process([label(0, 0, "e0", 1), event(0, 2, "e2")])
    a.commits_land = False
    a.ck.save("interval")  # snapshot written (e0 resolved, e2 pending), commit lost: A dies here
    b = Member(kafka, group)
    b.assign(0)
    assert b.source("changelog") == 1 and b.ck.offsets == {TopicPartition(IN, 0): 2}
    assert set(b.proc.labels.join.pending) == {"e0", "e1"}  # type: ignore[union-attr]  # the snapshot before
    b.process([label(0, 0, "e0", 1), event(0, 2, "e2")])  # consumed again from the committed offsets
    assert b.learned() == 1 and kafka.dead() == []


def test_a_restart_sets_aside_a_checkpoint_whose_commit_did_not_land(tmp_path: Path) -> None:
    kafka, group = Topics(), Group()
    a = Member(kafka, group, tmp_path)
    a.assign(0)
    a.process([event(0, 0, "e0", 1)])
    a.ck.save("interval")
    a.process([event(0, 1, "e1", 0)])
    a.commits_land = False
    a.ck.save("interval")  # checkpoint 2 written, its commit lost: the process dies here
    again = Member(kafka, group, tmp_path)
    info = again.ck.restore(again.consumer.committed)
    assert info is not None and info.offsets == {IN: {0: 1}} and again.learned() == 1
    assert len(list(tmp_path.glob("*.rolled-back"))) == 1
    again.assign(0)
    assert again.source("checkpoint") == 1
    again.process([event(0, 1, "e1", 0)])
    assert again.learned() == 2


def test_exactly_once_commits_every_batch_and_a_next_owner_replays_the_gap_without_outputs(tmp_path: Path) -> None:
    """With transactions, offsets are committed every batch and the state every interval: the next owner takes
    the newest state not ahead of the committed offsets and learns the records between without publishing."""
    kafka, group = Topics(), Group()
    a = Member(kafka, group, tmp_path / "a", every_events=3, exactly_once=True)
    a.assign(0)
    a.process([event(0, 0, "e0", 1), event(0, 1, "e1", 0), event(0, 2, "e2"), label(0, 0, "zz", 1)])
    a.ck.end_batch()  # a save point (4 records): snapshot at 3 / 1, committed 3 / 1
    a.process([event(0, 3, "e3", 1), label(0, 1, "e2", 1)])
    a.ck.end_batch()  # no save point: the transaction commits the offsets only
    assert group.committed_offsets == {TopicPartition(IN, 0): 4, TopicPartition(LABELS, 0): 2}
    assert a.transactions == ["begin"]  # the save point's snapshots joined the batch's transaction
    predictions = len(kafka.logs[TopicPartition("pred", 0)])

    b = Member(kafka, group, exactly_once=True)  # A died: B takes partition 0 over
    b.assign(0)
    assert b.source("changelog") == 1
    assert b.ck.catch_up == {TopicPartition(IN, 0): 4, TopicPartition(LABELS, 0): 2}
    again, live = b.ck.replaying([event(0, 3, "e3", 1), label(0, 1, "e2", 1), event(0, 4, "e4", 0)])
    assert [r.offset for r in again] == [3, 1] and [r.offset for r in live] == [4]
    b.sink.muted = True
    b.process(list(again))
    b.sink.muted = False
    b.process(list(live))
    b.ck.end_batch()
    assert group.committed_offsets == {TopicPartition(IN, 0): 5, TopicPartition(LABELS, 0): 2}
    assert b.ck.catch_up == {}
    assert b.learned() == 3  # e3, e2 (its label), e4: what A learned since its save point, and the new one
    assert len(kafka.logs[TopicPartition("pred", 0)]) == predictions + 1  # only e4 is published


def test_exactly_once_an_instance_back_after_another_owned_its_partition_does_not_learn_that_owner_s_records(
        tmp_path: Path) -> None:
    """A is killed; B takes partition 0 over (replaying A's lost gap) and learns on; A comes back and gets the
    partition again: it takes B's newer state instead of replaying from its own checkpoint, so every labeled event
    is learned by the group once (A's checkpoint + B's learning), not B's records twice."""
    kafka, group = Topics(), Group()
    a = Member(kafka, group, tmp_path / "a", every_events=3, exactly_once=True, owner="a")
    a.assign(0)
    a.process([event(0, 0, "e0", 1), event(0, 1, "e1", 0), event(0, 2, "e2", 1)])
    a.ck.end_batch()  # save point: state and checkpoint at 3, committed 3
    a.process([event(0, 3, "e3", 0)])
    a.ck.end_batch()  # the transaction commits 4; the state stays at 3: A is killed here

    b = Member(kafka, group, tmp_path / "b", every_events=3, exactly_once=True, owner="b")
    b.assign(0)
    again, live = b.ck.replaying([event(0, 3, "e3", 0), event(0, 4, "e4", 1), event(0, 5, "e5", 0)])
    b.sink.muted = True
    b.process(list(again))  # e3: A's lost record, learned again here
    b.sink.muted = False
    b.process(list(live))  # e4, e5
    b.ck.end_batch()
    b.ck.revoked([TopicPartition(IN, 0), TopicPartition(LABELS, 0)])  # A is back: B saves, commits, lets go
    assert group.committed_offsets[TopicPartition(IN, 0)] == 6 and b.learned() == 3

    back = Member(kafka, group, tmp_path / "a", every_events=3, exactly_once=True, owner="a")
    assert back.ck.restore() is not None and back.learned() == 3  # A's checkpoint: e0..e2
    back.assign(0)
    assert back.source("changelog") == 1
    assert back.ck.catch_up == {}  # nothing to replay: B's state is where the group committed
    assert back.ck.offsets[TopicPartition(IN, 0)] == 6
    back.process([event(0, 6, "e6", 1)])
    assert back.learned() + b.learned() == 7  # e0..e6, each once
