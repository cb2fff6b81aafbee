"""The run loop against a fake Kafka backend (no broker): its written order (flush -> save -> commit),
back-pressure, and what it does with each kind of Kafka error."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftline.errors import KafkaSecurityError, PublishError
from driftline.learners.capabilities import Capability
from driftline.learners.factory import build_learner
from driftline.learners.river_head import RiverLearner
from driftline.learners.river_sync import MergeableRiverLearner
from driftline.settings import ModelSettings, Settings
from driftline.stream.checkpointing import Checkpointer
from driftline.stream.kafka.seam import (
    CommitLostError,
    KafkaAccessError,
    RetriableKafkaError,
    TopicPartition,
)
from driftline.stream.kafka.writer import FlushResult
from driftline.stream.loop import Service
from driftline.stream.records import InboundRecord

TP = TopicPartition("in", 0)


class Lost:
    """A script step: the group evicted this member; the fake calls on_lost, then assigns again."""


class Script:
    """What the fake consumer returns, poll by poll: a batch of records, an error to raise, or `Lost`."""

    def __init__(self, steps: Sequence[list[InboundRecord] | Exception | Lost]) -> None:
        self.steps = list(steps)


class FakeConsumer:
    def __init__(self, script: Script, calls: list[str], stop: Callable[[], None],
                 commit_errors: list[Exception]) -> None:
        self.script, self.calls, self.stop = script, calls, stop
        self.commit_errors = commit_errors
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self.sought: dict[TopicPartition, int] = {}
        self.commits = 0
        self._on_assign: Callable[[Sequence[TopicPartition]], None] | None = None
        self._on_lost: Callable[[Sequence[TopicPartition]], None] | None = None

    def subscribe(self, topics: Sequence[str], *, on_assign: Any, on_revoke: Any, on_lost: Any = None) -> None:
        self._on_assign, self._on_lost = on_assign, on_lost or on_revoke

    def poll(self, timeout_ms: int) -> list[InboundRecord]:
        if not self._assigned and self._on_assign is not None:
            self._assigned = {TP}
            self._on_assign([TP])
        if not self.script.steps:
            self.stop()
            return []
        step = self.script.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if isinstance(step, Lost):
            assert self._on_lost is not None
            self.calls.append("lost")
            self._on_lost(sorted(self._assigned))
            self._assigned = set()
            return []
        if self._paused:
            self.script.steps.insert(0, step)  # paused partitions return nothing
            return []
        self.calls.append("poll")
        return step

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self.calls.append("pause")
        self._paused |= set(partitions)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self.calls.append("resume")
        self._paused -= set(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.sought[partition] = offset

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None, *, wait: bool = True) -> None:
        if self.commit_errors:
            raise self.commit_errors.pop(0)
        self.calls.append("commit" if wait else "commit:sent")
        self.commits += 1
        self.offsets = dict(offsets or {})

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        return {tp: None for tp in partitions}

    def lag(self) -> dict[TopicPartition, int]:
        return {TP: 0}

    def close(self) -> None:
        self.calls.append("close")


class FakeWriter:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.sent: list[tuple[str, bytes | None]] = []
        self.fail_flush = False

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Sequence[tuple[str, bytes]] | None = None) -> None:
        self.sent.append((topic, value))

    def flush(self, timeout: float | None = None) -> FlushResult:
        self.calls.append("flush")
        if self.fail_flush:
            return FlushResult(sent=0, failed={"predictions": ["KafkaTimeoutError: simulated"]})
        return FlushResult(sent=len(self.sent))

    def partitions_for(self, topic: str) -> int:
        return 1

    def close(self, timeout: float = 30.0) -> None:
        pass


class FakeBackend:
    def __init__(self, script: Script, commit_errors: Sequence[Exception] = ()) -> None:
        self.script = script
        self.calls: list[str] = []
        self.commit_errors = list(commit_errors)
        self.writer_ = FakeWriter(self.calls)
        self.consumer_: FakeConsumer | None = None
        self.service: Service | None = None

    def check_connection(self) -> bool:
        return True

    def ensure_topics(self, topics: Collection[str], partitions: int = 1,
                      configs: Mapping[str, str] | None = None) -> None:
        pass

    def topic_partitions(self, topic: str) -> int:
        return 1

    def consumer(self) -> FakeConsumer:
        assert self.service is not None
        self.consumer_ = FakeConsumer(self.script, self.calls, self.service.stop, self.commit_errors)
        return self.consumer_

    def writer(self) -> FakeWriter:
        return self.writer_


def records(start: int, n: int) -> list[InboundRecord]:
    return [InboundRecord("in", 0, i, 1_700_000_000_000 + i, None,
                          json.dumps({"id": f"e{i}", "features": {"x": float(i % 7)}, "label": i % 2}).encode())
            for i in range(start, start + n)]


def service(backend: FakeBackend, tmp_path: Path | None = None, learner: Any = None,
            registry: CollectorRegistry | None = None, every_events: int = 1) -> Service:
    cfg: dict[str, Any] = {"model": {"name": "GaussianNB"}, "kafka": {"poll_timeout_ms": 1},
                           "checkpoint": {"every_events": every_events}}
    if tmp_path is not None:
        cfg["checkpoint"]["directory"] = str(tmp_path)
    s = Settings(**cfg)
    svc = Service(s, learner or build_learner(s.model), registry, serve_http=False, kafka=backend)
    backend.service = svc
    return svc


def _saves_named(monkeypatch: pytest.MonkeyPatch, backend: FakeBackend) -> FakeBackend:
    """``backend``, whose calls also name each save point (``save:<trigger>``)."""
    save = Checkpointer.save

    def recorded(self: Checkpointer, trigger: str, **kw: Any) -> Any:
        backend.calls.append(f"save:{trigger}")
        return save(self, trigger, **kw)

    monkeypatch.setattr(Checkpointer, "save", recorded)
    return backend


def test_each_batch_is_flushed_then_saved_then_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _saves_named(monkeypatch, FakeBackend(Script([records(0, 10), records(10, 10)])))
    totals = service(backend, tmp_path).run()
    assert (totals.consumed, totals.learned) == (20, 20)
    batch = ["poll", "flush", "save:interval", "commit"]
    # the last save point covered every record: nothing left to save or commit on the way out
    assert backend.calls == [*batch, *batch, "save:shutdown", "close"]


def test_offsets_are_committed_at_save_points_only_with_or_without_a_checkpoint_directory() -> None:
    backend = FakeBackend(Script([records(0, 2), records(2, 2), records(4, 2)]))
    service(backend, every_events=3).run()
    assert backend.calls == ["poll", "flush", "poll", "flush", "commit", "poll", "flush", "commit", "close"]
    assert backend.consumer_ is not None and backend.consumer_.offsets == {TP: 6}  # what the state reflects


def test_a_commit_lost_to_a_rebalance_or_a_broker_away_is_counted_and_the_loop_goes_on() -> None:
    errors = [CommitLostError("commit", "RebalanceInProgressError", "rebalancing"),
              RetriableKafkaError("commit", "KafkaConnectionError", "broker away")]
    backend = FakeBackend(Script([records(0, 5), records(5, 5), records(10, 5)]), commit_errors=errors)
    registry = CollectorRegistry()
    totals = service(backend, registry=registry).run()
    # the third batch's commit (it covers the two that failed); nothing new on the way out
    assert totals.consumed == 15 and backend.consumer_ is not None and backend.consumer_.commits == 1
    for kind in ("RebalanceInProgressError", "KafkaConnectionError"):
        assert registry.get_sample_value("driftline_kafka_retriable_errors_total",
                                         {"operation": "commit", "error": kind}) == 1


def test_a_retriable_poll_error_is_counted_and_polled_again() -> None:
    backend = FakeBackend(Script([RetriableKafkaError("poll", "NodeNotReadyError", "no leader"), records(0, 5)]))
    registry = CollectorRegistry()
    assert service(backend, registry=registry).run().learned == 5
    assert registry.get_sample_value("driftline_kafka_retriable_errors_total",
                                     {"operation": "poll", "error": "NodeNotReadyError"}) == 1


def test_refused_access_stops_the_service_with_the_reason_and_keeps_a_consistent_state(tmp_path: Path) -> None:
    backend = FakeBackend(Script([records(0, 5), KafkaAccessError("poll", "SaslAuthenticationFailedError",
                                                                   "Authentication failed")]))
    with pytest.raises(KafkaSecurityError, match=r"refused this service while it ran \(SaslAuthenticationFailedError"):
        service(backend, tmp_path).run()
    assert backend.calls[-1] == "close"
    assert list(tmp_path.glob("ckpt-*")), "the state of the flushed batch was saved"


def test_partitions_lost_to_an_eviction_are_counted_logged_and_the_loop_rejoins(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = FakeBackend(Script([records(0, 5), Lost(), records(5, 5)]))
    registry = CollectorRegistry()
    totals = service(backend, tmp_path, registry=registry).run()
    assert totals.learned == 10
    assert backend.calls[:4] == ["poll", "flush", "commit", "lost"] and backend.calls.count("commit") == 2
    assert registry.get_sample_value("driftline_kafka_retriable_errors_total",
                                     {"operation": "rebalance", "error": "partitions_lost"}) == 1
    assert "lost 1 partitions without a revoke" in caplog.text


def test_outputs_kafka_did_not_acknowledge_stop_the_loop_before_the_commit() -> None:
    backend = FakeBackend(Script([records(0, 5)]))
    backend.writer_.fail_flush = True
    with pytest.raises(PublishError, match="offsets not committed"):
        service(backend).run()
    assert "commit" not in backend.calls and backend.calls[-1] == "close"


class Saturating(RiverLearner):
    """A River learner that says it trains in the background and is saturated for its first two checks."""

    capabilities = frozenset({Capability.BACKGROUND_TRAINED})

    def __init__(self) -> None:
        super().__init__(ModelSettings(name="GaussianNB"))
        self.checks = 0
        self.drained = threading.Event()

    @property
    def latest_version(self) -> int:
        return self.version

    def saturated(self) -> bool:
        self.checks += 1
        return self.checks <= 2

    def backlog(self) -> int:
        return 3 if self.checks <= 2 else 0

    def drain(self, timeout: float | None = None) -> bool:
        self.drained.set()
        return True

    def hold_between_windows(self) -> bool:
        return True

    def release_hold(self) -> None:
        pass

    def close(self) -> None:
        pass

    def set_synchronous(self, on: bool = True) -> None:
        pass


class Training(Saturating):
    """Never behind, but a window is in training at the asks ``busy`` names (by number, from 1)."""

    def __init__(self, busy: Collection[int] = (1, 2)) -> None:
        super().__init__()
        self.busy = busy
        self.asked = self.released = 0

    def saturated(self) -> bool:
        return False

    def hold_between_windows(self) -> bool:
        self.asked += 1
        return self.asked not in self.busy

    def release_hold(self) -> None:
        self.released += 1


def test_a_background_trained_model_is_saved_on_the_way_out_even_with_no_new_record(tmp_path: Path) -> None:
    """The last interval checkpoint covered every record, then draining finished a window: that learning
    must reach the shutdown checkpoint (it did not: save() skipped when no record came since the last)."""
    learner = Saturating()
    backend = FakeBackend(Script([records(0, 5)]))
    service(backend, tmp_path, learner=learner).run()  # every_events 1: the batch's interval save covers it
    assert learner.drained.is_set()
    assert len(list(tmp_path.glob("ckpt-*"))) == 2  # the interval one and the shutdown one


def test_back_pressure_pauses_while_training_is_behind_and_resumes_after() -> None:
    backend = FakeBackend(Script([records(0, 5), records(5, 5)]))
    learner = Saturating()
    registry = CollectorRegistry()
    totals = service(backend, learner=learner, registry=registry).run()
    assert totals.learned == 10 and learner.drained.is_set()
    assert backend.calls[:6] == ["poll", "flush", "commit", "pause", "resume", "poll"]
    assert registry.get_sample_value("driftline_backpressure_pauses_total") == 1
    assert registry.get_sample_value("driftline_consumer_paused") == 0


def test_a_save_point_due_while_a_window_trains_is_taken_at_a_later_batch_end_the_loop_never_waits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _saves_named(monkeypatch, FakeBackend(Script([records(0, 5), records(5, 5), records(10, 5)])))
    registry = CollectorRegistry()
    learner = Training()
    service(backend, tmp_path, learner=learner, registry=registry).run()
    batch = ["poll", "flush"]
    # (the shutdown save point commits again: draining may have trained a window since)
    assert backend.calls == [*batch, *batch, *batch, "save:interval", "commit", "save:shutdown", "commit", "close"]
    assert learner.asked == 3 and learner.released == 2  # (the interval save point's and the shutdown's)
    assert registry.get_sample_value("driftline_checkpoint_deferrals_total", {"trigger": "interval"}) == 1


class Deadly(RiverLearner):
    """Kills the process (SystemExit: no per-record ``except Exception`` sees it) on one event."""

    def __init__(self, deadly_id: str) -> None:
        super().__init__(ModelSettings(name="GaussianNB"))
        self.deadly_id = deadly_id

    def predict_one(self, x: Any) -> Any:
        if x.id == self.deadly_id:
            raise SystemExit(134)
        return super().predict_one(x)


def _run_until_death(backend: FakeBackend, tmp_path: Path, learner: Any) -> bool:
    try:
        service(backend, tmp_path, learner=learner).run()
    except SystemExit:
        return True
    return False


def test_a_record_that_kills_the_process_alone_twice_is_quarantined_and_nothing_else_is(tmp_path: Path) -> None:
    # run 1: dies in a normal batch; runs 2 and 3: the batch one record at a time, dies with e7 in hand
    for run in range(3):
        assert _run_until_death(FakeBackend(Script([records(0, 10)])), tmp_path, Deadly("e7"))
        if run == 1:
            assert json.loads((tmp_path / "inflight.json").read_text())["record"] == ["in", 0, 7]
    assert json.loads((tmp_path / "inflight.json").read_text())["strikes"] == [["in", 0, 7, 1]]
    # run 4: e7 is dead-lettered unprocessed, every other record goes through
    backend = FakeBackend(Script([records(0, 10), records(10, 5)]))
    totals = service(backend, tmp_path, learner=Deadly("e7")).run()
    assert (totals.consumed, totals.predicted, totals.dead_lettered) == (15, 14, 1)
    dead = [v for t, v in backend.writer_.sent if t == "driftline.dead-letter"]
    assert dead == [records(7, 1)[0].value]
    # it stays condemned after a clean stop (a checkpoint older than it would bring it back)
    assert json.loads((tmp_path / "inflight.json").read_text())["condemned"] == [["in", 0, 7]]


def test_a_plain_kill_quarantines_nothing(tmp_path: Path) -> None:
    # run 1 dies between records (a SIGKILL, an outage): run 2 takes the batch one at a time, and all pass
    assert _run_until_death(FakeBackend(Script([records(0, 10)])), tmp_path, Deadly("e3"))
    totals = service(FakeBackend(Script([records(0, 10)])), tmp_path, learner=Deadly("none")).run()
    assert (totals.consumed, totals.predicted, totals.dead_lettered) == (10, 10, 0)
    assert not (tmp_path / "inflight.json").exists()


def test_one_kill_with_a_record_in_hand_quarantines_nothing(tmp_path: Path) -> None:
    """A member killed twice in a row, the second time while it handles one record on its own (a rolling restart
    gone wrong, a test that kills it repeatedly): the record gets one strike and is processed on the next start."""
    assert _run_until_death(FakeBackend(Script([records(0, 10)])), tmp_path, Deadly("e3"))
    assert _run_until_death(FakeBackend(Script([records(0, 10)])), tmp_path, Deadly("e3"))  # with e3 in hand
    totals = service(FakeBackend(Script([records(0, 10)])), tmp_path, learner=Deadly("none")).run()
    assert (totals.consumed, totals.predicted, totals.dead_lettered) == (10, 10, 0)


def test_a_kill_while_waiting_after_a_careful_batch_quarantines_nothing(tmp_path: Path) -> None:
    """Run 2 takes the suspect batch one record at a time, all pass, then it is killed while it waits for the
    next batch: the last record it handled is not in hand any more and must not be condemned (it was: the
    marker kept naming it until the next batch)."""
    assert _run_until_death(FakeBackend(Script([records(0, 10)])), tmp_path, Deadly("e3"))
    killed = RuntimeError("SIGKILL while polling")  # escapes the loop like a death: the marker stays
    with pytest.raises(RuntimeError):
        service(FakeBackend(Script([records(0, 10), killed])), tmp_path, learner=Deadly("none")).run()
    assert json.loads((tmp_path / "inflight.json").read_text())["record"] is None
    totals = service(FakeBackend(Script([records(0, 10)])), tmp_path, learner=Deadly("none")).run()
    assert (totals.consumed, totals.predicted, totals.dead_lettered) == (10, 10, 0)


def test_a_failed_commit_is_retried_even_when_no_record_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A save point's commit that fails (the broker restarting) is retried a second later on a quiet stream;
    it used to wait for the next record, so the tail of a stream stayed uncommitted."""
    errors = [RetriableKafkaError("commit", "_WAIT_COORD", "waiting for coordinator")]
    quiet: list[InboundRecord] = []
    backend = FakeBackend(Script([records(0, 5), *([quiet] * 3)]), commit_errors=errors)
    clock = iter(float(t) for t in range(0, 1000, 1))  # each call: one second later
    monkeypatch.setattr("driftline.stream.checkpointing.time.monotonic", lambda: next(clock))
    service(backend).run()
    assert backend.consumer_ is not None and backend.consumer_.offsets == {TP: 5}
    assert backend.calls[:5] == ["poll", "flush", "poll", "commit", "poll"]  # retried while the stream is quiet


def _synced(monkeypatch: pytest.MonkeyPatch, script: Script, *, loop_back: bool = False) -> FakeBackend:
    """A backend for sync.mode average (the sync topic in memory) whose calls also name each save point and each
    record sent to the sync topic; ``loop_back``: what is sent to the sync topic is on it (rounds close)."""
    from driftline.stream import group_sync
    from tests.unit.test_syncer import Log, Reader, Writer

    log = Log()
    monkeypatch.setattr(group_sync, "partition_reader", lambda _kafka: Reader(log))
    backend = _saves_named(monkeypatch, FakeBackend(script))
    send = backend.writer_.send

    def sent(topic: str, key: bytes | None, value: bytes | None, *args: Any, **kw: Any) -> None:
        if topic.endswith(".sync"):
            backend.calls.append(f"send:{topic}")
            if loop_back:
                Writer(log).send(topic, key, value)
        send(topic, key, value, *args, **kw)

    monkeypatch.setattr(backend.writer_, "send", sent)
    return backend


def test_an_update_due_at_a_batch_end_rides_on_that_batch_s_save_point(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """sync.mode average: when the group's update is due at the end of a batch, that batch's save point is the one
    the update needs (it records the update, then its offsets are committed), and the update is sent after the
    commit: one save point, not the batch's and then the sync's."""
    backend = _synced(monkeypatch, Script([records(0, 10), records(10, 10)]))
    s = Settings(model={"name": "GaussianNB"}, kafka={"poll_timeout_ms": 1},
                 checkpoint={"every_events": 10, "directory": str(tmp_path)},
                 sync={"mode": "average", "every_events": 10, "every_seconds": 3600})
    svc = Service(s, build_learner(s.model), None, serve_http=False, kafka=backend)
    backend.service = svc
    svc.run()
    topic = s.sync_topic
    first = backend.calls.index("poll")
    # (before: the hello at join; the second batch: the update is out and its round open, a plain save point;
    # the way out: a bye)
    assert backend.calls[first:] == ["poll", "flush", "save:sync", "commit", f"send:{topic}", "flush",
                                     "poll", "flush", "save:interval", "commit", "save:shutdown",
                                     f"send:{topic}", "flush", "close"]


class TrainingMergeable(Training, MergeableRiverLearner):
    """`Training` that the group can average (GaussianNB's counts)."""

    capabilities = frozenset({Capability.BACKGROUND_TRAINED, Capability.MERGEABLE})


def test_an_update_due_while_the_model_trains_a_window_is_put_off_to_a_later_batch_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The group's update reads the model's parameters and comes with a save point: due while a window trains,
    it is put off (the loop goes on polling) and goes out at the first batch end where the model is between
    two windows, riding on that batch's save point as usual."""
    backend = _synced(monkeypatch, Script([records(0, 10), records(10, 10), records(20, 10)]))
    s = Settings(model={"name": "GaussianNB"}, kafka={"poll_timeout_ms": 1},
                 checkpoint={"every_events": 10, "directory": str(tmp_path)},
                 sync={"mode": "average", "every_events": 10, "every_seconds": 3600})
    registry = CollectorRegistry()
    learner = TrainingMergeable(busy={1, 2, 3})
    svc = Service(s, learner, registry, serve_http=False, kafka=backend)
    backend.service = svc
    svc.run()
    topic = s.sync_topic
    first = backend.calls.index("poll")
    # the first batch: the update and the save point put off (three asks); the second: both go out
    assert backend.calls[first:] == ["poll", "flush", "poll", "flush", "save:sync", "commit", f"send:{topic}",
                                     "flush", "poll", "flush", "save:interval", "commit", "save:shutdown", "commit",
                                     f"send:{topic}", "flush", "close"]
    for trigger in ("sync", "interval"):
        assert registry.get_sample_value("driftline_checkpoint_deferrals_total", {"trigger": trigger}) == 1
    assert learner.released >= 3


def test_a_round_that_closes_while_the_model_trains_a_window_is_merged_at_a_later_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Merging a round reads and loads the model: while a window trains it is put off (the records wait, read
    once), and the round is merged at the next sync step where the model is between two windows."""
    backend = _synced(monkeypatch, Script([records(0, 10), records(10, 10)]), loop_back=True)
    s = Settings(model={"name": "GaussianNB"}, kafka={"poll_timeout_ms": 1},
                 sync={"mode": "average", "every_events": 10, "every_seconds": 3600})
    registry = CollectorRegistry()
    learner = TrainingMergeable(busy={2})  # 1: the update (sent); 2: the merge of its round (put off)
    svc = Service(s, learner, registry, serve_http=False, kafka=backend)
    backend.service = svc
    svc.run()
    assert registry.get_sample_value("driftline_checkpoint_deferrals_total", {"trigger": "merge"}) == 1
    merged = registry.get_sample_value("driftline_sync_round")
    assert merged is not None and merged >= 1 and learner.version == merged + 1  # (the second batch's round too)
