"""The service end to end against a real Apache Kafka broker, run as `driftline run` subprocesses."""

from __future__ import annotations

import collections
import itertools
import json
from pathlib import Path

import pytest
from kafka import KafkaProducer

from driftline.core import Event
from driftline.learners.factory import build_learner
from driftline.settings import KafkaSettings, ModelSettings
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.sources import from_generator
from tests.helpers import (
    ServiceProcess,
    committed_offsets,
    end_offsets,
    produce_events,
    read_topic,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.integration]

MODEL = {"name": "LogisticRegression", "classes": [False, True]}


def _sea(n: int, prefix: str, seed: int = 1) -> list[dict]:
    return list(itertools.islice(from_generator("SEA", params={"variant": 0}, seed=seed, id_prefix=prefix), n))


def _in_process_accuracy(events: list[dict]) -> float:
    learner = build_learner(ModelSettings(**MODEL))  # type: ignore[arg-type]
    ok = 0
    for raw in events:
        e = Event.model_validate(raw)
        ok += learner.predict_one(e).value == e.label
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    return ok / len(events)


def _wait_consumed(svc: ServiceProcess, n: int, timeout: float = 120.0) -> None:
    def done() -> bool:
        if svc.proc.poll() is not None:
            raise RuntimeError(f"service exited with {svc.proc.returncode}:\n{svc.log()}")
        return svc.metric('driftline_events_total{outcome="consumed"}') >= n
    wait_for(done, timeout, f"{n} events consumed")


def _run_until_consumed(cfg: Path, log: Path, n: int) -> dict[str, float]:
    """Run the service until it has consumed ``n`` events; its metrics then; stopped with SIGTERM."""
    svc = ServiceProcess(cfg, log)
    try:
        svc.wait_ready()
        _wait_consumed(svc, n)
        return svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()


@pytest.mark.slow
def test_5000_events_one_prediction_each_accuracy_and_commits(kafka_bootstrap: str, topic_prefix: str,
                                                              tmp_path: Path) -> None:
    # Offsets are committed at save points only: every 2 s here (the default 30 s raced the wait below).
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=MODEL,
                       checkpoint={"every_seconds": 2.0})
    events = _sea(5000, "sea-")
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events)
    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    try:
        svc.wait_ready()
        _wait_consumed(svc, 5000)
        # Committed offsets reach the end once the last batch is flushed.
        wait_for(lambda: committed_offsets(kafka_bootstrap, f"{topic_prefix}-group", f"{topic_prefix}-in")
                 == end_offsets(kafka_bootstrap, f"{topic_prefix}-in"), 30, "commit of the last batch")
        m = svc.metrics()  # after the commit, so the last batch's flush (and its latencies) is in
    finally:
        assert svc.terminate() == 0, svc.log()

    preds = read_topic(kafka_bootstrap, f"{topic_prefix}-pred")
    counts = collections.Counter(json.loads(r.value)["id"] for r in preds)
    assert set(counts) == {e["id"] for e in events}
    assert max(counts.values()) == 1, "an event was predicted twice"
    first = json.loads(preds[0].value)
    assert set(first) >= {"id", "prediction", "proba", "model_version", "latency_ms", "source"}

    acc = m['driftline_prequential_accuracy_ratio{model="LogisticRegression",window="cumulative"}']
    # SEA(variant 0, seed 1) is a linear concept: LR + scaling measures 0.982 in-process; predicting the
    # majority class scores 0.685. Above 0.95 means the service really learns; and since one partition
    # keeps stream order and the learner is deterministic, the service must reproduce the in-process
    # prequential run exactly (learning before predicting, or skipping labels, would change it).
    assert acc > 0.95
    assert acc == pytest.approx(_in_process_accuracy(events), abs=1e-12)
    assert m['driftline_events_total{outcome="learned"}'] == 5000
    assert m['driftline_events_total{outcome="dead_lettered"}'] == 0
    assert m['driftline_model_updates{model="LogisticRegression"}'] == 5000
    assert m["driftline_predict_latency_seconds_count{model=\"LogisticRegression\"}"] == 5000
    assert m["driftline_end_to_end_latency_seconds_count"] == 5000
    assert 'driftline_consumer_lag_records{partition="0",topic="' + f'{topic_prefix}-in"' + "}" in m


BAD = [
    (b"\xc3\x28 not utf8", "not_utf8"),
    (b"{oops", "not_json"),
    (b"[1,2]", "not_object"),
    (b'{"features": {"x1": 1.0}, "label": true}', "missing_id"),
    (b'{"id": "w1", "features": {"x1": "a", "x2": [1]}, "label": true}', "wrong_type"),
    (b'{"id": "w2", "features": {"x1": 1.0}, "label": [true]}', "wrong_type"),
    (b'{"id": "n1", "features": {"x1": NaN, "x2": 1.0}, "label": true}', "non_finite"),
    (b'{"id": "n2", "features": {"x1": Infinity}, "label": false}', "non_finite"),
    (b'{"id": "u1", "features": {"x1": 1.0}, "label": "maybe"}', "unknown_label"),
    (b"", "empty_payload"),
    # the poison pill that used to stop the service for good (Python refuses a 5,000-digit integer)
    (b'{"id": "p1", "features": {"x1": ' + b"9" * 5000 + b'}, "label": true}', "number_too_long"),
    (b'{"id": "d1", "features": {"x1": 1.0}, "label": true, "label": false}', "duplicate_key"),
    (b'{"id": "t1", "features": {"x1": ' + b"[" * 3000 + b"]" * 3000 + b"}}", "too_deep"),
    (json.dumps({"id": "m1", "features": {f"f{i}": 1.0 for i in range(10_001)}}).encode(), "too_many_features"),
    (b'{"id": "s1", "features": {"x1": "' + b"s" * 20_000 + b'"}}', "string_too_long"),
    # close to the broker's limit: with the dead letter's headers it would be refused unless cut to fit
    (b"{not json " + b"x" * 999_000, "not_json"),
]


@pytest.mark.slow
# kafka-python's producer runs in a child process or a thread; librdkafka's queues in C (publisher unused)
@pytest.mark.parametrize(("kafka_client", "publisher"), [("confluent", "auto"), ("kafka-python", "process"),
                                                        ("kafka-python", "thread")], indirect=["kafka_client"])
def test_malformed_records_go_to_the_dead_letter_topic_and_good_ones_flow(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, kafka_client: str, publisher: str) -> None:
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=MODEL,
                       kafka={"publisher": publisher})
    good = _sea(640, "g-", seed=5)
    partitions = 3  # interleaved across partitions: record i goes to partition i % 3
    values: list[bytes] = []
    expected: dict[tuple[int, int], str] = {}  # (input partition, offset) -> reason
    bad_iter = iter(BAD)
    for i, ev in enumerate(good):
        values.append(json.dumps(ev).encode())
        if i % 40 == 0:
            bad = next(bad_iter, None)
            if bad is not None:
                values.append(bad[0])
                n = len(values) - 1
                expected[(n % partitions, n // partitions)] = bad[1]
    assert len(expected) == len(BAD)
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [f"{topic_prefix}-in"], partitions=partitions)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5, max_request_size=2_000_000)
    for i, v in enumerate(values):
        producer.send(f"{topic_prefix}-in", value=v, partition=i % partitions)
    producer.flush()
    producer.close()
    m = _run_until_consumed(cfg, tmp_path / "svc.log", len(values))

    dlq = read_topic(kafka_bootstrap, f"{topic_prefix}-dlq")
    got = {}
    for rec in dlq:
        h = dict(rec.headers)
        assert h["driftline.source.topic"].decode() == f"{topic_prefix}-in"
        assert h["driftline.error"], "every dead letter names its error"
        partition, offset = int(h["driftline.source.partition"]), int(h["driftline.source.offset"])
        got[(partition, offset)] = h["driftline.reason"].decode()
        original = values[offset * partitions + partition]
        if h.get("driftline.truncated") == b"true":  # cut to fit the topic, and it says so
            assert len(original) > 990_000 and original.startswith(rec.value)
            assert int(h["driftline.original_bytes"]) == len(original)
        else:
            assert rec.value == original, "the original bytes are kept"
    assert got == expected
    preds = {json.loads(r.value)["id"] for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")}
    # every good event is predicted; u1 is predicted too (its label is refused only when learning)
    assert preds == {e["id"] for e in good} | {"u1"}
    assert m['driftline_events_total{outcome="learned"}'] == len(good)
    assert m['driftline_events_total{outcome="dead_lettered"}'] == len(BAD)
    for reason in {r for _, r in BAD}:
        assert m[f'driftline_dead_letters_total{{reason="{reason}"}}'] == sum(1 for _, r in BAD if r == reason)


@pytest.mark.slow
def test_sigterm_commits_and_a_restart_predicts_nothing_twice(kafka_bootstrap: str, topic_prefix: str,
                                                              tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=MODEL,
                       kafka={"max_poll_records": 50})
    events = _sea(3000, "r-", seed=9)
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events[:1500])
    svc = ServiceProcess(cfg, tmp_path / "svc1.log")
    svc.wait_ready()
    _wait_consumed(svc, 300)
    assert svc.terminate() == 0, svc.log()
    first_run = read_topic(kafka_bootstrap, f"{topic_prefix}-pred")
    committed = committed_offsets(kafka_bootstrap, f"{topic_prefix}-group", f"{topic_prefix}-in")
    # graceful stop: everything predicted is committed, nothing more
    assert committed == {0: len(first_run)}
    assert 300 <= len(first_run) <= 1500

    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events[1500:])
    svc2 = ServiceProcess(cfg, tmp_path / "svc2.log")
    try:
        svc2.wait_ready()
        _wait_consumed(svc2, 3000 - len(first_run))
    finally:
        assert svc2.terminate() == 0, svc2.log()
    counts = collections.Counter(json.loads(r.value)["id"] for r in read_topic(kafka_bootstrap,
                                                                                f"{topic_prefix}-pred"))
    assert set(counts) == {e["id"] for e in events}
    assert max(counts.values()) == 1, [k for k, v in counts.items() if v > 1][:5]


@pytest.mark.slow
def test_regression_service_reports_mae_and_rmse(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    from driftline.monitoring.prequential import RegressionTracker
    from driftline.stream.sources import from_dataset

    model = {"task": "regression", "name": "LinearRegression"}
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=model,
                       metrics={"rolling_window": 100})
    events = list(from_dataset("TrumpApproval", id_prefix="tr-"))
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events)
    m = _run_until_consumed(cfg, tmp_path / "svc.log", len(events))
    learner = build_learner(ModelSettings(**model))  # type: ignore[arg-type]
    tracker = RegressionTracker(100)
    for raw in events:
        e = Event.model_validate(raw)
        tracker.update(float(e.label), learner.predict_one(e).value)  # type: ignore[arg-type]
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    for name, want in (("mae", tracker), ("rmse", tracker)):
        assert m[f'driftline_prequential_{name}{{model="LinearRegression",window="cumulative"}}'] == pytest.approx(
            getattr(want, f"cumulative_{name}"), rel=1e-9)
        assert m[f'driftline_prequential_{name}{{model="LinearRegression",window="rolling"}}'] == pytest.approx(
            getattr(want, f"rolling_{name}"), rel=1e-9)
    assert m['driftline_events_total{outcome="learned"}'] == len(events)
    preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
    assert all(p["proba"] is None for p in preds) and isinstance(preds[-1]["prediction"], float)
