from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from driftline.errors import ConfigError
from driftline.learners.checkpoint import DirectoryStore
from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import ServiceMetrics
from driftline.settings import CheckpointSettings, ModelSettings
from driftline.stream.checkpointing import Checkpointer
from driftline.stream.kafka.seam import TopicPartition
from driftline.stream.observers import Ledger
from driftline.stream.pipeline import build_processor
from driftline.stream.processor import EventProcessor
from driftline.stream.records import InboundRecord


def _processor(name: str = "GaussianNB") -> tuple[EventProcessor, ServiceMetrics, CollectorRegistry]:
    reg = CollectorRegistry()
    learner = build_learner(ModelSettings(name=name))
    metrics = ServiceMetrics(reg, model=learner.name, task=learner.task)
    return build_processor(learner, None, metrics, rolling_window=100, max_payload_bytes=1000), metrics, reg  # type: ignore[arg-type]


def _records(offsets: range, partition: int = 0) -> list[InboundRecord]:
    return [InboundRecord("in", partition, o, 0, None, b"{}") for o in offsets]


def test_policy_and_restore_skipping_a_corrupt_newest(tmp_path: Path) -> None:
    cfg = CheckpointSettings(directory=str(tmp_path), every_events=100, every_seconds=3600)
    proc, metrics, _ = _processor()
    ck = Checkpointer(cfg, proc, metrics)
    assert ck.restore() is None
    assert not ck.due() and ck.save("interval") is False  # nothing new: nothing written
    ck.advance(_records(range(0, 60)))
    assert not ck.due()
    ck.advance(_records(range(0, 50), partition=1))
    assert ck.due()
    proc.require(Ledger).add("a")
    assert ck.save("interval") is True
    loaded = DirectoryStore(tmp_path).load()
    assert loaded is not None
    first = loaded[0]
    assert first.offsets == {"in": {0: 60, 1: 50}} and first.learned == 1
    ck.advance(_records(range(60, 70)))
    ck.save("shutdown")
    newest = sorted(tmp_path.glob("ckpt-*.bin"))[-1]
    newest.write_bytes(newest.read_bytes()[:-3])  # truncated

    proc2, metrics2, reg2 = _processor()
    ck2 = Checkpointer(cfg, proc2, metrics2)
    info = ck2.restore()
    assert info is not None and info.version == first.version
    assert ck2.offsets == {TopicPartition("in", 0): 60, TopicPartition("in", 1): 50}
    assert proc2.require(Ledger).learned == 1
    assert reg2.get_sample_value("driftline_checkpoint_corrupt_total") == 1
    assert reg2.get_sample_value("driftline_checkpoint_restored_version") == first.version


def test_a_checkpoint_of_another_model_is_a_clear_startup_error(tmp_path: Path) -> None:
    cfg = CheckpointSettings(directory=str(tmp_path))
    proc, _, _ = _processor("GaussianNB")
    DirectoryStore(tmp_path).save(proc.state_dict(), {"in": {0: 5}}, learned=0)
    other, metrics2, _ = _processor("LogisticRegression")
    with pytest.raises(ConfigError, match="does not fit this configuration"):
        Checkpointer(cfg, other, metrics2).restore()


class Trains:
    """A learner training in the background: ``answers`` to hold_between_windows, then True; holds counted."""

    def __init__(self, *answers: bool) -> None:
        self.answers, self.holds = list(answers), 0

    def hold_between_windows(self) -> bool:
        self.holds += 1
        return self.answers.pop(0) if self.answers else True

    def release_hold(self) -> None:
        self.holds = 0


def test_a_due_save_point_is_put_off_while_the_learner_trains_a_window_for_at_most_every_seconds(
        tmp_path: Path) -> None:
    """A model training in the background (Continual) is asked whether a snapshot now would wait for a window
    in training: while it would, the due save point is put off (counted once) instead of blocking the loop,
    and the learner holds its next window; the save point releases it. Put off for every_seconds, it is taken
    anyway. Without a checkpoint directory there is no snapshot to wait for."""
    proc, metrics, reg = _processor()
    learner = Trains(False, False)
    ck = Checkpointer(CheckpointSettings(directory=str(tmp_path / "a"), every_events=1, every_seconds=60), proc,
                      metrics, trained=learner)  # type: ignore[arg-type]
    ck.advance(_records(range(3)))
    assert not ck.due() and not ck.due()
    assert ck.due() and learner.holds == 3
    assert reg.get_sample_value("driftline_checkpoint_deferrals_total", {"trigger": "interval"}) == 1
    assert ck.save("interval") and not ck.due()
    assert learner.holds == 0  # released

    never = Checkpointer(CheckpointSettings(directory=str(tmp_path / "b"), every_events=1, every_seconds=0.2), proc,
                         metrics, trained=Trains(*[False] * 100))  # type: ignore[arg-type]
    never.advance(_records(range(3)))
    assert not never.due()
    time.sleep(0.25)
    assert never.due()  # put off long enough: taken, waiting for the window in training

    idle = Trains(False)
    no_directory = Checkpointer(CheckpointSettings(every_events=1), proc, metrics, trained=idle)  # type: ignore[arg-type]
    no_directory.advance(_records(range(3)))
    assert no_directory.due() and idle.holds == 0


def test_training_stays_held_while_another_step_is_put_off(tmp_path: Path) -> None:
    """A merge put off while a window trained, then a save point taken between windows: releasing the learner
    after the save point would let it start a window that the merge would wait for again; it is released when
    no step is put off any more."""
    proc, metrics, reg = _processor()
    learner = Trains(False)
    ck = Checkpointer(CheckpointSettings(directory=str(tmp_path), every_events=1), proc, metrics,
                      trained=learner)  # type: ignore[arg-type]
    assert not ck.between_windows("merge", 60)
    ck.advance(_records(range(3)))
    assert ck.due() and ck.save("interval")
    assert learner.holds > 0  # still held for the merge
    assert ck.between_windows("merge", 60)
    ck.release()
    assert learner.holds == 0
    assert reg.get_sample_value("driftline_checkpoint_deferrals_total", {"trigger": "merge"}) == 1
