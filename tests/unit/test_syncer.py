"""The member's side of sync (`stream.sync.Syncer`): joining, sending, adopting, restarting, over an in-memory
log with the sync topic's semantics (one partition, every member reads every record in order). The real
broker runs the same code in tests/integration/test_sync.py."""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry

from driftline.core import Event
from driftline.learners.base import Learner
from driftline.learners.capabilities import mergeable
from driftline.learners.factory import build_learner
from driftline.learners.mergeable import decode, digest
from driftline.monitoring.metrics import SyncMetrics
from driftline.settings import ModelSettings, SyncSettings
from driftline.stream.kafka.seam import TopicPartition
from driftline.stream.kafka.writer import FlushResult
from driftline.stream.records import InboundRecord
from driftline.stream.sources import from_generator
from driftline.stream.sync import Syncer, SyncState

CFG = ModelSettings(name="LogisticRegression", classes=[False, True])


class Log:
    def __init__(self) -> None:
        self.records: list[InboundRecord] = []


class Writer:
    def __init__(self, log: Log) -> None:
        self.log = log

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Any = None) -> None:
        # stamped with the time it was sent (an ensemble snapshot's age)
        self.log.records.append(InboundRecord(topic, 0, len(self.log.records), int(time.time() * 1000), key, value))

    def flush(self, timeout: float | None = None) -> FlushResult:
        return FlushResult()

    def partitions_for(self, topic: str) -> int:
        return 1

    def close(self, timeout: float = 30.0) -> None:
        return None


class Reader:
    def __init__(self, log: Log) -> None:
        self.log = log
        self.pos = 0

    def partitions(self, topic: str) -> list[int]:
        return [0]

    def bounds(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        return {tp: (0, len(self.log.records)) for tp in tps}

    def offsets_for_time(self, tps: Sequence[TopicPartition], ms: int) -> dict[TopicPartition, int | None]:
        return {}

    def start(self, offsets: Mapping[TopicPartition, int]) -> None:
        for off in offsets.values():
            self.pos = off

    def poll(self, timeout_s: float) -> list[InboundRecord]:
        out = self.log.records[self.pos:]
        self.pos = len(self.log.records)
        return out

    def position(self, tp: TopicPartition) -> int:
        return self.pos

    def close(self) -> None:
        return None


def _member(log: Log, name: str, learner: Learner | None = None, state: SyncState | None = None) -> Syncer:
    learner = learner or build_learner(CFG)
    model = mergeable(learner)
    assert model is not None
    return Syncer(SyncSettings(mode="average", every_seconds=1e9, every_events=10**9), learner, model,
                  state or SyncState(), topic="sync", group="g", member=name, writer=Writer(log), reader=Reader(log),
                  metrics=SyncMetrics(CollectorRegistry()))


def _events(n: int, seed: int) -> list[Event]:
    return [Event.model_validate(e) for e in itertools.islice(from_generator("SEA", seed=seed, id_prefix="e"), n)]


def _learn(s: Syncer, events: Sequence[Event]) -> None:
    for e in events:
        assert e.label is not None
        s.learner.learn_one(e, e.label)


def _params_digest(s: Syncer) -> str:
    return digest(s.model.sync_params())


def test_members_in_step_hold_the_same_model_after_every_round_and_a_joiner_starts_from_it() -> None:
    log = Log()
    members = [_member(log, n) for n in ("a", "b", "c")]
    for m in members:
        m.join()
    for r in range(1, 4):
        for i, m in enumerate(members):
            _learn(m, _events(100 * (i + 1), seed=10 * r + i))
            m.prepare()
            assert m.send_update()
        for m in members:
            m.poll()
        assert {m.rounds.merged_round for m in members} == {r}
        assert len({_params_digest(m) for m in members}) == 1, f"round {r}: members differ"
        assert all(m.learner.version == r + 1 for m in members)
    joiner = _member(log, "d")
    joiner.join()
    assert _params_digest(joiner) == _params_digest(members[0]) and joiner.learner.version == 4


def test_members_that_start_from_different_models_converge_on_the_closer_s() -> None:
    """Sync turned on for a group whose members have checkpoints: their scalers' statistics differ, so their
    first merged models differ; the published one (the closer's) is taken, and they agree from then on."""
    log = Log()
    a_learner = build_learner(CFG)
    for e in _events(300, seed=1):
        assert e.label is not None
        a_learner.learn_one(e, e.label)
    a, b = _member(log, "a", a_learner), _member(log, "b")
    a.join()
    b.join()
    for seed, m in enumerate((a, b)):
        _learn(m, _events(50, seed=seed + 20))
        m.prepare()
        m.send_update()
    a.poll()
    b.poll()
    a.poll()  # the merged record
    b.poll()
    assert a.rounds.merged_round == b.rounds.merged_round == 1
    assert _params_digest(a) == _params_digest(b)
    assert a.metrics.diverged._value.get() + b.metrics.diverged._value.get() == 1


def test_a_restart_knows_its_update_made_the_round_and_counts_nothing_twice() -> None:
    """B dies right after sending (its checkpoint holds the update in flight); the round closes with it; B's
    restart adopts the merged model as it is (its learning is in it already, not added again)."""
    log = Log()
    a, b = _member(log, "a"), _member(log, "b")
    a.join()
    b.join()
    _learn(b, _events(200, seed=3))
    b.prepare()
    checkpoint = (b.learner.state_dict(), b.state.state_dict())  # the save point before the send
    b.send_update()
    _learn(a, _events(200, seed=4))
    a.prepare()
    a.send_update()
    a.poll()  # round 1 closes with both: a publishes the merged model
    state = SyncState()
    state.load_state_dict(checkpoint[1])
    learner = build_learner(CFG)
    learner.load_state_dict(checkpoint[0])
    b2 = _member(log, "b", learner, state)
    b2.join()
    assert b2.rounds.merged_round == 1 and _params_digest(b2) == _params_digest(a)
    assert b2.metrics.unsynced_lost._value.get() == 0
    assert b2.labels_since() == 0  # the learning it sent is the group's: its next update's weight starts at 0


def test_a_members_drift_adaptation_is_carried_by_the_round_and_taken_by_every_member() -> None:
    """Group decisions: member a's reset policy acts on a drift (the real Adapter); its next update says so, and
    the round's model is a's adapted model alone, taken by every member (b's learning of the old concept is left
    behind, what b learned after it sent is kept). Every member computes the same digest."""
    from driftline.adapters.adaptation import Adapter
    from driftline.adapters.config import DriftSettings
    from driftline.adapters.detectors import Detection
    from driftline.learners.mergeable import merge, rebase
    from driftline.monitoring.metrics import ServiceMetrics

    log = Log()
    a, b = _member(log, "a"), _member(log, "b")
    for m in (a, b):
        m.join()
    old = [Event.model_validate(e) for e in itertools.islice(
        from_generator("SEA", params={"variant": 0}, seed=1, id_prefix="o"), 600)]
    new = [Event.model_validate(e) for e in itertools.islice(
        from_generator("SEA", params={"variant": 3}, seed=2, id_prefix="n"), 600)]
    for m, part in ((a, old[:300]), (b, old[300:])):
        _learn(m, part)
        m.prepare()
        m.send_update()
    for m in (a, b):
        m.poll()
    assert a.rounds.merged_round == 1 and _params_digest(a) == _params_digest(b)
    # a meets the new concept, its detector fires, the reset policy relearns the recent (new) events
    adapter = Adapter(a.learner, DriftSettings(policies=[{"name": "reset", "params": {"since_change": False}}],
                                               guard={"window": 0}, window=200),
                      seed=1, metrics=ServiceMetrics(CollectorRegistry(), model="m", task="classification"))
    adapter.initial_state = build_learner(CFG).state_dict()  # a fresh model (the config's initial state)
    for e in new[:200]:
        assert e.label is not None
        a.learner.learn_one(e, e.label)
        adapter.observe_labeled(e, e.label, None)
    adapter.on_detection(Detection("ADWIN", "drift", 500, 0.4))
    assert adapter.actions_taken == 1
    adapted = a.model.sync_params()
    _learn(b, old[:100])  # b still learns the old concept
    for m in (a, b):
        m.prepare()
        m.send_update()
    assert a.state.pub_adapted is True and b.state.pub_adapted is False  # (kept until the round closes)
    header, _ = decode(log.records[-2].value or b"")
    assert header.get("adapted") is True
    _learn(b, new[200:250])  # what b learns after it sent is kept
    now_b, pub_b = b.model.sync_params(), b.state.pub
    assert pub_b is not None
    for m in (a, b):
        m.poll()
    assert a.rounds.merged_round == 2 and a.state.pub_adapted is False
    merged = a.state.ref
    assert merged is not None and digest(merged) == digest(merge({}, [(1.0, adapted)]))  # a's model alone
    assert _params_digest(a) == digest(merged)  # a learned nothing since it sent
    assert b.state.ref is not None and digest(b.state.ref) == digest(merged)  # every member computed the same
    assert _params_digest(b) == digest(rebase(merged, now_b, pub_b))  # b: the group's model + what it learned since
    assert b.metrics.group_adaptations._value.get() == 1


def test_incoming_reads_the_records_that_the_next_poll_handles_and_nothing_else() -> None:
    """The run loop asks `incoming` first and puts the merge off while the model trains a window: what poll then
    handles is what incoming read (a record arriving in between waits for the next step), and a round that
    closes is merged only when poll runs."""
    log = Log()
    a, b = _member(log, "a"), _member(log, "b")
    a.join()
    b.join()
    a.poll()
    b.poll()
    for m, seed in ((a, 1), (b, 2)):
        _learn(m, _events(100, seed=seed))
        m.prepare()
        assert m.send_update()
    assert a.incoming()  # both updates wait: the round closes when they are handled
    assert a.rounds.merged_round == 0
    assert a.incoming()  # asked again while the merge is put off: nothing is read twice or lost
    a.poll()
    assert a.rounds.merged_round == 1 and a.learner.version == 2
    b.poll()  # never asked: reads what the topic has
    assert b.rounds.merged_round == 1 and _params_digest(a) == _params_digest(b)
    while a.incoming():  # the round's merged record (published by its closer)
        a.poll()
    seen = len(log.records)
    Writer(log).send("sync", b"x", b"{}")  # arrives after the ask
    a.poll()
    assert a._unread is None and a.reader.pos == seen  # left for the next step
    assert a.incoming()
    a.poll()
