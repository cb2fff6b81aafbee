"""The Continual (Avalanche) learner in the service, against the real broker: the poll loop keeps polling
while a slow strategy trains, back-pressure pauses and resumes without losing a record, and the model
version grows on the prediction records and survives a restart."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from driftline.learners.continual import ContinualLearner
from driftline.learners.factory import build_learner
from driftline.learners.training_worker import Window
from driftline.settings import load_settings
from driftline.stream.loop import Service
from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, committed_offsets, produce_events, read_topic, wait_for, write_config
from tests.tiny_models import AGRAWAL_NUMERIC

pytestmark = [pytest.mark.integration]

EVENTS = 1000
MODEL: dict[str, Any] = {"name": "Continual", "backbone": {"kind": "identity", "features": AGRAWAL_NUMERIC},
                         "params": {"strategy": "Replay", "strategy_params": {"mem_size": 200}, "window_events": 100,
                                    "hidden": 32, "lr": 0.01}}


def _agrawal(n: int, prefix: str) -> list[dict[str, Any]]:
    return list(itertools.islice(from_generator("Agrawal", seed=4, id_prefix=prefix), n))


@pytest.mark.usefixtures("kafka_client")  # on both Kafka client libraries
@pytest.mark.parametrize("checkpoints", [False, True], ids=["no-checkpoints", "checkpoints"])
def test_poll_loop_keeps_polling_while_a_slow_strategy_trains(kafka_bootstrap: str, topic_prefix: str,
                                                              tmp_path: Path, checkpoints: bool) -> None:
    """Each window's training waits until the run loop has gone round five more times: were training on
    the loop's thread, the loop could not go round and the test would time out. The loop pauses its
    partitions while a window waits (max_pending_windows: 1) and every record is still predicted, learned
    and committed. With checkpoints, save points fall due while a window trains: a save point waiting for
    that window would stop the loop too; it is deferred to a batch end between two windows instead."""
    settings = load_settings(
        checkpoint={"directory": str(tmp_path / "ckpt"), "every_events": 50} if checkpoints else {},
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": f"{topic_prefix}-g", "client_id": topic_prefix,
               "max_poll_records": 50, "max_poll_interval_ms": 6000, "session_timeout_ms": 6000,
               "publisher": "thread"},
        topics={"input": f"{topic_prefix}-in", "predictions": f"{topic_prefix}-pred",
                "dead_letter": f"{topic_prefix}-dlq"},
        model={**MODEL, "params": {**MODEL["params"], "max_pending_windows": 1}},
        metrics={"port": 0})
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", _agrawal(EVENTS, "p-"))
    learner = build_learner(settings.model)
    assert isinstance(learner, ContinualLearner)
    service = Service(settings, learner, serve_http=False)
    train = learner.worker.train_fn
    stuck: list[str] = []
    laps: list[int] = []

    def gated(w: Window) -> None:
        seen, last = 0, service._heartbeat
        deadline = time.monotonic() + 60
        while seen < 5:
            if time.monotonic() > deadline:
                stuck.append(f"the loop went round {seen} times in 60 s while a window waited to train")
                break
            if service._heartbeat != last:
                seen, last = seen + 1, service._heartbeat
            time.sleep(0.005)
        laps.append(seen)
        train(w)

    learner.worker.train_fn = gated
    runner = threading.Thread(target=service.run, name="service-under-test")
    runner.start()
    try:
        wait_for(lambda: not runner.is_alive() or learner.updates >= EVENTS, 180, "every event learned")
        wait_for(lambda: not runner.is_alive() or learner.worker.buffered() == 0, 180, "every window trained")
    finally:
        service.stop()
        runner.join(120)
    assert not runner.is_alive() and not stuck, stuck
    # windows grow past window_events while training is behind: fewer, larger windows, nothing left out
    assert len(laps) == learner.worker.trained_windows and min(laps) == 5
    m = service.metrics
    assert m.pauses._value.get() >= 1  # back-pressure engaged (one window pending at most) ...
    assert m.paused._value.get() == 0  # ... and was released
    assert sum(s.value for s in m.kafka_errors.collect()[0].samples if s.name.endswith("_total")) == 0
    preds = read_topic(kafka_bootstrap, f"{topic_prefix}-pred")
    assert sorted(json.loads(r.value)["id"] for r in preds) == sorted(f"p-{i}" for i in range(EVENTS))
    versions = [json.loads(r.value)["model_version"] for r in preds]
    assert versions == sorted(versions) and versions[-1] > 1  # swaps appear in order on the records
    assert read_topic(kafka_bootstrap, f"{topic_prefix}-dlq") == []
    assert committed_offsets(kafka_bootstrap, f"{topic_prefix}-g", f"{topic_prefix}-in") == {0: EVENTS}
    if checkpoints:
        assert m.checkpoint_deferrals.labels("interval")._value.get() >= 1
        assert sum(s.value for s in m.checkpoints.collect()[0].samples if s.name.endswith("_total")) >= 3


@pytest.mark.slow
def test_driftline_run_with_an_avalanche_strategy_checkpoints_and_resumes(kafka_bootstrap: str, topic_prefix: str,
                                                                          tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=MODEL,
                       checkpoint={"directory": str(ckpt), "every_events": 200})
    events = _agrawal(600, "a-")
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events[:300])
    svc = ServiceProcess(cfg, tmp_path / "run1.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_model_version{model="Continual"}') >= 4, 120, "three windows trained")
        produce_events(kafka_bootstrap, f"{topic_prefix}-in", events[300:])
        wait_for(lambda: svc.metric('driftline_events_total{outcome="learned"}') >= 600, 120, "600 learned")
        wait_for(lambda: svc.metric('driftline_model_version{model="Continual"}') >= 7, 120, "six windows trained")
        assert 'driftline_training_backlog_windows{model="Continual"}' in svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()
    preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
    assert len(preds) == 600
    later = {e["id"] for e in events[300:]}
    assert min(p["model_version"] for p in preds if p["id"] in later) >= 4  # predicted by trained weights
    # the restart starts from the shutdown checkpoint: same version, nothing predicted twice
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", _agrawal(100, "b-"))
    svc = ServiceProcess(cfg, tmp_path / "run2.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="predicted"}') >= 100, 120, "100 predicted")
        restored = svc.metric("driftline_checkpoint_restored_version")
        assert restored >= 1
    finally:
        assert svc.terminate() == 0, svc.log()
    preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
    assert len(preds) == 700
    assert min(p["model_version"] for p in preds if p["id"].startswith("b-")) >= 7  # 6 swaps + the drained one
