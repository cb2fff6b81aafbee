"""Nothing lost, nothing learned twice: the service is killed mid-stream and restarted."""

from __future__ import annotations

import collections
import itertools
import json
import random
import signal
import threading
from pathlib import Path

import pytest

from driftline.learners.checkpoint import DirectoryStore
from driftline.settings import KafkaSettings
from driftline.stream.broker import LocalKafkaBroker
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.kafka.publisher import publish
from driftline.stream.observers import id_hash
from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, committed_offsets, end_offsets, read_topic, wait_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 30_000
RATE = 4_000.0  # events/s: the stream lasts ~7.5 s, so the kills land mid-stream


@pytest.mark.parametrize(("sig", "kafka_client"), [(signal.SIGKILL, "confluent"), (signal.SIGKILL, "kafka-python"),
                                                   (signal.SIGTERM, "confluent")],
                         ids=["sigkill-confluent", "sigkill-kafka-python", "sigterm-confluent"],
                         indirect=["kafka_client"])
def test_killed_three_times_every_event_learned_exactly_once(kafka_bootstrap: str, topic_prefix: str,
                                                             tmp_path: Path, sig: signal.Signals,
                                                             kafka_client: str) -> None:
    ckpt_dir = tmp_path / "ckpt"
    cfg = write_config(
        tmp_path / "c.yaml", kafka_bootstrap, topic_prefix,
        model={"name": "LogisticRegression", "classes": [False, True]},
        kafka={"max_poll_records": 200},
        checkpoint={"directory": str(ckpt_dir), "every_events": 1500, "every_seconds": 1.0, "keep": 3},
    )
    topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [topic], partitions=2)
    events = list(itertools.islice(from_generator("SEA", seed=11, id_prefix="c-"), N_EVENTS))
    producer = threading.Thread(target=publish, args=(events, topic, kafka), kwargs={"rate": RATE, "progress": False})
    rng = random.Random(1234)

    svc = ServiceProcess(cfg, tmp_path / "run0.log")
    svc.wait_ready()
    producer.start()
    kills = 0
    try:
        for i in range(3):
            # a random point mid-stream: after a random number of events consumed by this run
            target = rng.randint(1500, 4500)
            wait_for(lambda s=svc, t=target: s.metric('driftline_events_total{outcome="consumed"}') >= t, 60,
                     f"run {i} to consume {target} events")
            if sig == signal.SIGKILL:
                svc.kill()
            else:
                assert svc.terminate() == 0, svc.log()
            kills += 1
            svc = ServiceProcess(cfg, tmp_path / f"run{i + 1}.log")
            svc.wait_ready()
        producer.join(120)
        wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic) == end_offsets(kafka_bootstrap, topic),
                 120, "the last run to consume everything")
    finally:
        assert svc.terminate() == 0, svc.log()
    assert kills == 3

    restored = DirectoryStore(ckpt_dir).load()
    assert restored is not None
    info, state = restored
    ledger = state["ledger"]
    assert ledger["learned"] == N_EVENTS == info.learned
    assert ledger["digest"] == sum(id_hash(e["id"]) for e in events) % (1 << 64), "an event was learned twice"
    assert state["learner"]["updates"] == N_EVENTS
    assert info.offsets == {topic: end_offsets(kafka_bootstrap, topic)}

    counts = collections.Counter(json.loads(r.value)["id"] for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred"))
    assert set(counts) == {e["id"] for e in events}, "an event was never predicted"
    duplicates = sum(c - 1 for c in counts.values())
    print(f"{sig.name}: {duplicates} duplicate prediction records (at-least-once outputs)")
    if sig == signal.SIGTERM:
        assert duplicates == 0  # a graceful stop checkpoints everything it committed


@pytest.mark.usefixtures("kafka_client")  # on both Kafka client libraries
def test_broker_restart_mid_stream_service_reconnects(tmp_path: Path, topic_prefix: str) -> None:
    n = 16_000
    with LocalKafkaBroker() as broker:  # our own broker: this test restarts it
        bootstrap = broker.bootstrap_servers
        ckpt_dir = tmp_path / "ckpt"
        cfg = write_config(
            tmp_path / "c.yaml", bootstrap, topic_prefix,
            model={"name": "LogisticRegression", "classes": [False, True]},
            kafka={"max_poll_records": 200},
            checkpoint={"directory": str(ckpt_dir), "every_events": 1500, "every_seconds": 1.0},
        )
        topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        ensure_topics(kafka, [topic], partitions=2)
        events = list(itertools.islice(from_generator("SEA", seed=12, id_prefix="b-"), n))
        producer = threading.Thread(target=publish, args=(events, topic, kafka),
                                    kwargs={"rate": RATE, "progress": False})
        svc = ServiceProcess(cfg, tmp_path / "svc.log")
        try:
            svc.wait_ready()
            producer.start()
            wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= 4000, 60, "4000 consumed")
            assert svc.metric('driftline_events_total{outcome="consumed"}') < n  # mid-stream
            broker.restart()
            producer.join(180)
            try:
                def caught_up() -> bool:
                    if svc.proc.poll() is not None:
                        raise TimeoutError(f"the service exited with {svc.proc.returncode}")
                    return committed_offsets(bootstrap, group, topic) == end_offsets(bootstrap, topic)

                wait_for(caught_up, 180, "the service to consume everything after the broker restart")
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\ncommitted {committed_offsets(bootstrap, group, topic)} end "
                                     f"{end_offsets(bootstrap, topic)}\n--- service log ---\n{svc.log()}") from None
            assert svc.proc.poll() is None, "the service must survive a broker restart by itself"
            errors = {k: v for k, v in svc.metrics().items() if k.startswith("driftline_kafka_retriable_errors_total")}
            print(f"retriable Kafka errors during the broker restart: {errors}")
        finally:
            assert svc.terminate() == 0, svc.log()
        restored = DirectoryStore(ckpt_dir).load()
        assert restored is not None
        _, state = restored
        assert state["ledger"]["learned"] == n
        assert state["ledger"]["digest"] == sum(id_hash(e["id"]) for e in events) % (1 << 64)
        counts = collections.Counter(json.loads(r.value)["id"] for r in read_topic(bootstrap, f"{topic_prefix}-pred"))
        assert set(counts) == {e["id"] for e in events}


def test_a_record_that_kills_the_process_is_quarantined_and_every_other_one_processed(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """A backbone that dies in native code on one record (os._exit, like a segfault): the first start dies
    with the batch in hand, the second and third take that batch one record at a time and die with the record
    in hand, the fourth dead-letters it as ``quarantined`` and processes everything else."""
    from tests.tiny_models import AGRAWAL_NUMERIC, save_encoder, torch_backbone

    events = list(itertools.islice(from_generator("Agrawal", seed=3, id_prefix="q-"), 300))
    events[150]["features"]["age"] = 666.0
    crashy = torch_backbone(save_encoder(tmp_path), class_path="tests.tiny_models:CrashyEncoder")
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix,
                       model={"name": "LogisticRegression", "classes": [0, 1], "backbone": crashy},
                       checkpoint={"directory": str(tmp_path / "ckpt"), "every_events": 50, "every_seconds": 1.0})
    assert "age" in AGRAWAL_NUMERIC
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [f"{topic_prefix}-in"], partitions=1)
    publish(events, f"{topic_prefix}-in", kafka, progress=False)
    for run in range(3):
        svc = ServiceProcess(cfg, tmp_path / f"run{run}.log")
        assert svc.proc.wait(240) == 70, svc.log()
        svc.kill()
    assert "processed one at a time" in (tmp_path / "run1.log").read_text()
    assert "tried once more on its own" in (tmp_path / "run2.log").read_text()
    svc = ServiceProcess(cfg, tmp_path / "run3.log")
    try:
        svc.wait_ready()
        wait_for(lambda: len(read_topic(kafka_bootstrap, f"{topic_prefix}-pred", timeout=10)) >= 299, 120,
                 "the other 299 predicted", interval=1.0)
    finally:
        assert svc.terminate() == 0, svc.log()
    assert "will be dead-lettered (quarantined)" in (tmp_path / "run3.log").read_text()
    dead = read_topic(kafka_bootstrap, f"{topic_prefix}-dlq")
    assert [(json.loads(r.value)["id"], dict(r.headers)["driftline.reason"]) for r in dead] == [
        ("q-150", b"quarantined")]
    preds = read_topic(kafka_bootstrap, f"{topic_prefix}-pred")
    assert {json.loads(r.value)["id"] for r in preds} == {e["id"] for e in events} - {"q-150"}
