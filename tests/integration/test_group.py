"""Several service processes in one consumer group, through the real broker, with delayed labels in flight:
partitions move while labels are pending and records uncommitted, and the group still predicts every event
once and learns every labeled event once."""

from __future__ import annotations

import collections
import itertools
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from driftline.learners.checkpoint import DirectoryStore
from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.observers import id_hash
from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, committed_offsets, end_offsets, read_topic, wait_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 12_000
RATE = 1_000.0  # events/s: the stream lasts ~12 s, so both moves land mid-stream
LABEL_DELAY = 1_500  # the label of event i is produced right after event i + LABEL_DELAY
PARTITIONS = 4


def _events(seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    events, truth = [], {}
    for e in itertools.islice(from_generator("SEA", seed=seed, id_prefix="g-"), N_EVENTS):
        truth[e["id"]] = e.pop("label")
        e.pop("timestamp", None)
        events.append(e)
    return events, truth


def _config(tmp_path: Path, bootstrap: str, prefix: str, name: str, **kafka: Any) -> Path:
    return write_config(tmp_path / f"{name}.yaml", bootstrap, prefix,
                        model={"name": "LogisticRegression", "classes": [False, True]},
                        topics={"labels": f"{prefix}-labels"}, kafka={"max_poll_records": 200, **kafka},
                        checkpoint={"directory": str(tmp_path / name), "every_events": 2000, "every_seconds": 1.0})


def _learned_by_the_group(tmp_path: Path, truth: dict[str, Any]) -> None:
    """The final checkpoints of the members together learned every labeled event exactly once."""
    learned, digest = 0, 0
    for name in ("a", "b"):
        restored = DirectoryStore(tmp_path / name).load()
        assert restored is not None
        ledger = restored[1]["ledger"]
        learned += ledger["learned"]
        digest += ledger["digest"]
        print(f"{name}: learned {ledger['learned']}")
    assert learned == N_EVENTS, "learned by the group: not every labeled event exactly once"
    assert digest % (1 << 64) == sum(id_hash(i) for i in truth) % (1 << 64), "an event learned twice, another never"


SLOW = 50.0  # events/s past a gate that is not open yet: the stream keeps flowing, slowly, until it opens


def _stream(bootstrap: str, events: list[dict[str, Any]], truth: dict[str, Any], topic: str, labels: str,
            done: threading.Event, rate: float = RATE, gates: dict[int, threading.Event] | None = None) -> None:
    """Events at RATE, each label LABEL_DELAY events later, all keyed by event id (so co-partitioned). Past
    index ``k`` of ``gates`` the stream goes on at SLOW until that gate is set (the test has done what it waits
    for), so a move is sure to happen mid-stream however long a member takes to start or to rebalance."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    closed = sorted((gates or {}).items())
    due = time.monotonic()
    try:
        for i, e in enumerate(events):
            slow = any(i >= k and not g.is_set() for k, g in closed)
            due += 1 / (SLOW if slow else rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif not slow:
                due = max(due, time.monotonic() - 1.0)  # after a slow stretch: no burst to catch up
            producer.send(topic, key=e["id"].encode(), value=json.dumps(e).encode())
            if i >= LABEL_DELAY:
                j = events[i - LABEL_DELAY]["id"]
                producer.send(labels, key=j.encode(), value=json.dumps({"id": j, "label": truth[j]}).encode())
        for e in events[-LABEL_DELAY:]:
            j = e["id"]
            producer.send(labels, key=j.encode(), value=json.dumps({"id": j, "label": truth[j]}).encode())
        producer.flush()
    finally:
        producer.close()
        done.set()


def _moved(log: str) -> set[int]:
    """The partitions a member was given (from its log)."""
    return {int(p) for p in re.findall(r"partition (\d+)(?: resumes|: no saved state)", log)}


def _waits(bootstrap: str, topic: str, predictions: str, partitions: set[int], since_ms: float,
           until_ms: float) -> list[float]:
    """How long each event of ``partitions`` produced between the two times waited for its prediction (s)."""
    sent = {json.loads(r.value)["id"]: r.timestamp for r in read_topic(bootstrap, topic)
            if r.partition in partitions and since_ms <= r.timestamp <= until_ms}
    return [(r.timestamp - sent[i]) / 1000 for r in read_topic(bootstrap, predictions)
            if (i := json.loads(r.value)["id"]) in sent]


# the consumer group protocol (KIP-848) on librdkafka, where a rebalance takes only the partitions that move; the
# classic (eager) one on both backends, where it takes all of them
@pytest.mark.parametrize(("kafka_client", "group_protocol"),
                         [("confluent", "consumer"), ("confluent", "classic"), ("kafka-python", "classic")],
                         ids=["consumer-confluent", "classic-confluent", "classic-kafka-python"],
                         indirect=["kafka_client"])
def test_scale_out_and_back_in_with_labels_in_flight_predicts_once_and_learns_once(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, kafka_client: str, group_protocol: str) -> None:
    topic, labels = f"{topic_prefix}-in", f"{topic_prefix}-labels"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [topic, labels], partitions=PARTITIONS)
    events, truth = _events(seed=5)
    protocol = {"group_protocol": group_protocol}
    a = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "a", **protocol), tmp_path / "a.log")
    b: ServiceProcess | None = None
    done = threading.Event()
    # at full rate until 3,000 (B starts), 6,000 once B is consuming, the rest once B has left
    joined, left = threading.Event(), threading.Event()
    producer = threading.Thread(target=_stream, args=(kafka_bootstrap, events, truth, topic, labels, done),
                                kwargs={"gates": {3_000: joined, 6_000: left}})
    try:
        a.wait_ready()
        producer.start()
        wait_for(lambda: a.metric('driftline_events_total{outcome="consumed"}') >= 3_000, 60, "A to consume 3,000")
        pending_at_join = a.metric('driftline_pending_labels{side="predictions"}')
        join_started = time.time() * 1000
        b = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "b", **protocol), tmp_path / "b.log")
        b.wait_ready()
        wait_for(lambda: b is not None and b.metric('driftline_events_total{outcome="consumed"}') > 0, 60,
                 "B to be given partitions")
        join_done = time.time() * 1000 + 2000
        revoked_at_join = a.metric("driftline_partitions_revoked_total")
        moved = _moved(b.log())
        joined.set()
        wait_for(lambda: b is not None and b.metric('driftline_events_total{outcome="consumed"}') >= 2_000, 60,
                 "B to consume 2,000")
        assert b.metric('driftline_partition_assignments_total{state="changelog"}') >= 1, b.log()
        pending_at_leave = b.metric('driftline_pending_labels{side="predictions"}')
        assert not done.is_set(), "the stream ended before B left: the test proves nothing"
        from_changelog = a.metric('driftline_partition_assignments_total{state="changelog"}')
        assert b.terminate() == 0, b.log()
        left.set()
        # B's two partitions, with the state B saved (on the consumer protocol A hears of them at its next heartbeat)
        wait_for(lambda: a.metric('driftline_partition_assignments_total{state="changelog"}') >= from_changelog + 2,
                 30, "A to take B's partitions back")
        revoked_at_leave = a.metric("driftline_partitions_revoked_total") - revoked_at_join
        producer.join(120)
        wait_for(lambda: committed_offsets(kafka_bootstrap, f"{topic_prefix}-group", topic)
                 == end_offsets(kafka_bootstrap, topic)
                 and committed_offsets(kafka_bootstrap, f"{topic_prefix}-group", labels)
                 == end_offsets(kafka_bootstrap, labels), 120, "A to consume and commit everything")
        waiting = {side: a.metric(f'driftline_pending_labels{{side="{side}"}}') for side in ("predictions", "labels")}
    finally:
        joined.set()
        left.set()
        if producer.ident is not None:
            producer.join(120)
        if b is not None:
            b.terminate()
        assert a.terminate() == 0, a.log()

    # the moves happened while labels were pending (and, the stream still flowing, records uncommitted)
    assert pending_at_join > 0 and pending_at_leave > 0
    assert waiting == {"predictions": 0, "labels": 0}

    # what the join stopped: B got half the partitions of both topics (co-partitioned). On the consumer protocol A
    # gave up only those (2 input + 2 labels partitions) and got them back without a revoke when B left; on the
    # classic protocol each rebalance took all A held
    assert len(moved) == PARTITIONS // 2, b.log()
    revoked = (revoked_at_join, revoked_at_leave)
    if group_protocol == "consumer":
        assert revoked == (PARTITIONS, 0), revoked
    else:  # all 8 at the join, A's 4 when B left
        assert revoked_at_join >= 2 * PARTITIONS and revoked_at_leave >= PARTITIONS, revoked
    stayed = _waits(kafka_bootstrap, topic, f"{topic_prefix}-pred", set(range(PARTITIONS)) - moved, join_started,
                    join_done)
    went = _waits(kafka_bootstrap, topic, f"{topic_prefix}-pred", moved, join_started, join_done)
    print(f"{group_protocol}: longest wait during the join, partitions that stayed {max(stayed):.2f} s "
          f"({len(stayed)} events), that moved {max(went):.2f} s ({len(went)} events)")
    if group_protocol == "consumer":
        assert max(stayed) < 2.0, "the partitions that stayed were paused by the join"

    counts = collections.Counter(json.loads(r.value)["id"] for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred"))
    assert set(counts) == set(truth), f"{len(set(truth) - set(counts))} events never predicted"
    assert sum(c - 1 for c in counts.values()) == 0, "events predicted twice"
    assert read_topic(kafka_bootstrap, f"{topic_prefix}-dlq", timeout=3) == []

    _learned_by_the_group(tmp_path, truth)


# transactions (exactly_once) are librdkafka's only
@pytest.mark.parametrize(("kafka_client", "exactly_once"),
                         [("confluent", False), ("confluent", True), ("kafka-python", False)],
                         ids=["at-least-once-confluent", "exactly-once-confluent", "at-least-once-kafka-python"],
                         indirect=["kafka_client"])
def test_one_of_two_members_killed_three_times_mid_stream_the_group_predicts_all_and_learns_once(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, kafka_client: str, exactly_once: bool) -> None:
    """B is SIGKILLed and restarted at once, three times, while labels are pending: its partitions wait for its
    session to expire, then resume from the group's committed offsets with the state that reflects them. B's
    learning since its last save point dies with it and is done again by whoever resumes the partition."""
    topic, labels, group = f"{topic_prefix}-in", f"{topic_prefix}-labels", f"{topic_prefix}-group"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [topic, labels], partitions=PARTITIONS)
    events, truth = _events(seed=6)
    # the broker's minimum session: the dead member's partitions move after ~6 s
    session: dict[str, Any] = {"session_timeout_ms": 6000, "exactly_once": exactly_once}
    a = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "a", **session), tmp_path / "a.log")
    b_cfg = _config(tmp_path, kafka_bootstrap, topic_prefix, "b", **session)
    b = ServiceProcess(b_cfg, tmp_path / "b0.log")
    done, killed = threading.Event(), threading.Event()
    # past 10,500 the stream slows until the third restart (a loaded machine, or kafka-python's slower rebalances,
    # once let the stream end before the third kill)
    producer = threading.Thread(target=_stream, args=(kafka_bootstrap, events, truth, topic, labels, done),
                                kwargs={"rate": 300.0, "gates": {N_EVENTS - LABEL_DELAY: killed}})
    pending_at_kills = []
    try:
        a.wait_ready()
        b.wait_ready()
        producer.start()
        for i in range(3):
            wait_for(lambda s=b: s.metric('driftline_events_total{outcome="consumed"}') >= 1_000, 90,
                     f"B run {i} to consume 1,000")
            # state in flight at the kill: predictions waiting for labels, or labels for events (a restarted
            # member may read a partition's labels ahead of its events)
            pending_at_kills.append(sum(b.metric(f'driftline_pending_labels{{side="{side}"}}')
                                        for side in ("predictions", "labels")))
            assert not done.is_set(), "the stream ended before the kill: the test proves nothing"
            b.kill()
            b = ServiceProcess(b_cfg, tmp_path / f"b{i + 1}.log")
            b.wait_ready()
        killed.set()
        producer.join(180)
        ends = {t: end_offsets(kafka_bootstrap, t) for t in (topic, labels)}
        wait_for(lambda: all(committed_offsets(kafka_bootstrap, group, t) == e for t, e in ends.items()), 120,
                 "the group to consume and commit everything")
        waiting = sum(m.metric(f'driftline_pending_labels{{side="{side}"}}') for m in (a, b)
                      for side in ("predictions", "labels"))
    finally:
        killed.set()
        if producer.ident is not None:
            producer.join(180)
        assert b.terminate() == 0, b.log()
        assert a.terminate() == 0, a.log()

    assert all(p > 0 for p in pending_at_kills), pending_at_kills
    assert waiting == 0
    committed = read_topic(kafka_bootstrap, f"{topic_prefix}-pred", isolation_level="read_committed")
    counts = collections.Counter(json.loads(r.value)["id"] for r in committed)
    assert set(counts) == set(truth), f"{len(set(truth) - set(counts))} events never predicted"
    duplicates = sum(c - 1 for c in counts.values())
    every = len(read_topic(kafka_bootstrap, f"{topic_prefix}-pred")) - len(committed)
    print(f"3 x SIGKILL, exactly_once={exactly_once}: {duplicates} duplicate predictions visible to read_committed; "
          f"{every} more records in the log (aborted transactions)")
    if exactly_once:
        assert duplicates == 0
    assert read_topic(kafka_bootstrap, f"{topic_prefix}-dlq", timeout=3) == []
    _learned_by_the_group(tmp_path, truth)


def test_a_static_member_killed_and_restarted_reclaims_its_partitions_without_a_rebalance(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """kafka.instance_id (static membership): B is SIGKILLed and restarted within the session timeout; it gets its
    partitions back without a rebalance: A, which keeps running, sees no revoke and no new assignment."""
    topic, labels, group = f"{topic_prefix}-in", f"{topic_prefix}-labels", f"{topic_prefix}-group"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [topic, labels], partitions=PARTITIONS)
    events, truth = _events(seed=7)
    a = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "a", instance_id="a",
                               session_timeout_ms=30_000), tmp_path / "a.log")
    b_cfg = _config(tmp_path, kafka_bootstrap, topic_prefix, "b", instance_id="b", session_timeout_ms=30_000)
    b = ServiceProcess(b_cfg, tmp_path / "b0.log")
    done = threading.Event()
    producer = threading.Thread(target=_stream, args=(kafka_bootstrap, events, truth, topic, labels, done),
                                kwargs={"rate": 500.0})
    try:
        a.wait_ready()
        b.wait_ready()
        assigned = 'driftline_partition_assignments_total{state="%s"}'
        wait_for(lambda: sum(a.metric(assigned % s) for s in ("checkpoint", "changelog", "none")) >= 2
                 and sum(b.metric(assigned % s) for s in ("checkpoint", "changelog", "none")) >= 2, 60,
                 "both members to hold two partitions each")
        time.sleep(3)  # A's own on_assign of that rebalance has run by now
        before = {s: a.metric(assigned % s) for s in ("checkpoint", "changelog", "none")}
        revoked_before = a.metric("driftline_partitions_revoked_total")
        producer.start()
        wait_for(lambda: b.metric('driftline_events_total{outcome="consumed"}') >= 1_000, 60, "B to consume 1,000")
        b.kill()
        killed_at = time.monotonic()
        b = ServiceProcess(b_cfg, tmp_path / "b1.log")
        b.wait_ready()
        wait_for(lambda: b.metric('driftline_events_total{outcome="consumed"}') > 0, 30, "B to consume again")
        back_after = time.monotonic() - killed_at
        assert not done.is_set(), "the stream ended before B came back: the test proves nothing"
        producer.join(180)
        ends = {t: end_offsets(kafka_bootstrap, t) for t in (topic, labels)}
        wait_for(lambda: all(committed_offsets(kafka_bootstrap, group, t) == e for t, e in ends.items()), 120,
                 "the group to consume and commit everything")
        after = {s: a.metric(assigned % s) for s in ("checkpoint", "changelog", "none")}
        revoked_after = a.metric("driftline_partitions_revoked_total")
    finally:
        if producer.ident is not None:
            producer.join(180)
        assert b.terminate() == 0, b.log()
        assert a.terminate() == 0, a.log()
    print(f"static member back {back_after:.1f} s after its SIGKILL (session timeout 30 s)")
    assert after == before, "A was given partitions again: the restart rebalanced the group"
    assert revoked_after == revoked_before, "A's partitions were revoked: the restart rebalanced the group"
    _learned_by_the_group(tmp_path, truth)


def test_a_static_member_stopped_gracefully_leaves_and_its_partitions_move_at_once(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """kafka.leave_group_on_stop (default): B, a static member with a 30 s session, is stopped with SIGTERM (a
    rolling deploy); A gets B's partitions within seconds, not after the session timeout."""
    topic, labels = f"{topic_prefix}-in", f"{topic_prefix}-labels"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic, labels], partitions=PARTITIONS)
    static: dict[str, Any] = {"session_timeout_ms": 30_000}
    a = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "a", instance_id="a", **static),
                       tmp_path / "a.log")
    b = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "b", instance_id="b", **static),
                       tmp_path / "b.log")
    assigned = 'driftline_partition_assignments_total{state="%s"}'
    try:
        a.wait_ready()
        b.wait_ready()
        wait_for(lambda: sum(b.metric(assigned % s) for s in ("checkpoint", "changelog", "none")) >= 2, 60,
                 "B to hold partitions")
        time.sleep(3)
        before = sum(a.metric(assigned % s) for s in ("checkpoint", "changelog", "none"))
        stopped = time.monotonic()
        assert b.terminate() == 0, b.log()
        wait_for(lambda: sum(a.metric(assigned % s) for s in ("checkpoint", "changelog", "none")) > before, 20,
                 "A to be given B's partitions")
        moved_after = time.monotonic() - stopped
    finally:
        b.kill()
        assert a.terminate() == 0, a.log()
    print(f"B's partitions moved to A {moved_after:.1f} s after its SIGTERM (session timeout 30 s)")
    assert "left group" in b.log_path.read_text()
    assert moved_after < 15
