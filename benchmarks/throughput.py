"""Throughput of the service against what its parts allow, on one topic of one real broker.

(a) passthrough: a client consumes each event and publishes one ~100-byte record per event, flushing and
    committing per batch like the service (no decoding, no model): the client's ceiling. Once with
    kafka-python, once with confluent-kafka (librdkafka).
(b) in-process: River LogisticRegression (with scaling) predict+learn on the same events, decoded
    beforehand (no Kafka).
(c) service: the real run loop end to end (consume, decode, validate, predict, publish the
    prediction, learn, flush, commit), on each backend, and on librdkafka with kafka.exactly_once (a
    transaction per batch); each figure the median of --runs runs.
(d) service with champion and challengers (librdkafka): the same LogisticRegression serving, GaussianNB and a
    Hoeffding tree predicting and learning every event beside it (what challengers cost).

Each rate is measured from the first consumed batch to the last commit. Prints a table, then one JSON
line: passthrough_eps(_confluent), inprocess_eps, service_eps_confluent, service_eps_kafka_python,
service_eps_exactly_once, service_eps_three_models, service_eps (the default backend's), ratio_confluent =
service_eps_confluent / min(passthrough_eps_confluent, inprocess_eps) and ratio_kafka_python likewise, and
overhead_us_confluent = 1e6 / service_eps_confluent - 1e6 / inprocess_eps: the microseconds per event the service
spends outside the model (consuming, decoding, publishing, accounting), a figure that does not move when the model
gets faster or slower.

    python benchmarks/throughput.py --events 100000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import threading
import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer
from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry

from driftline.learners.factory import build_learner
from driftline.process import settle_heap
from driftline.settings import KafkaSettings, MetricsSettings, ModelSettings, Settings, TopicSettings
from driftline.stream.broker import kafka_cluster
from driftline.stream.codec import decode_event
from driftline.stream.kafka.clients import ensure_topics, make_consumer, make_producer
from driftline.stream.kafka.publisher import publish
from driftline.stream.loop import Service
from driftline.stream.observers import Quality, Served
from driftline.stream.pipeline import learners_from_settings
from driftline.stream.sources import from_generator

MODEL = ModelSettings(name="LogisticRegression", classes=[False, True])
# (d) champion and challengers: the same LogisticRegression serving, two River challengers beside it
CHALLENGERS: dict[str, Any] = {
    "logreg": {**MODEL.model_dump(), "serving": True},
    "nb": {"name": "GaussianNB"},
    "tree": {"name": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 200}},
}


def passthrough(kafka: KafkaSettings, topic: str, n: int) -> float:
    consumer = make_consumer(kafka, group_id=f"bench-pass-{uuid.uuid4().hex[:6]}")
    producer = make_producer(kafka, client_suffix="bench")
    out_topic = f"{topic}-passthrough-out"
    ensure_topics(kafka, [out_topic], partitions=1)
    payload = b"x" * 100
    consumer.subscribe([topic])
    seen, t0 = 0, None
    while seen < n:
        batch = consumer.poll(timeout_ms=kafka.poll_timeout_ms)
        if not batch:
            continue
        if t0 is None:
            t0 = time.monotonic()
        for recs in batch.values():
            for r in recs:
                # same partition mapping as the service's predictions (input partition -> same partition)
                producer.send(out_topic, key=r.key, value=payload, partition=r.partition)
            seen += len(recs)
        producer.flush()
        consumer.commit()
    assert t0 is not None
    dt = time.monotonic() - t0
    producer.close()
    consumer.close()
    return seen / dt


def passthrough_confluent(kafka: KafkaSettings, topic: str, n: int) -> float:
    group = f"bench-cpass-{uuid.uuid4().hex[:6]}"
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.wait.max.ms": kafka.fetch_max_wait_ms})
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "acks": kafka.acks,
                         "linger.ms": kafka.linger_ms, "batch.size": kafka.batch_size,
                         "delivery.report.only.error": True})
    out_topic = f"{topic}-cpassthrough-out"
    ensure_topics(kafka, [out_topic], partitions=1)
    payload = b"x" * 100
    consumer.subscribe([topic])
    seen, t0 = 0, None
    while seen < n:
        msgs = consumer.consume(num_messages=kafka.max_poll_records, timeout=kafka.poll_timeout_ms / 1000)
        if not msgs:
            continue
        if t0 is None:
            t0 = time.monotonic()
        for m in msgs:
            producer.produce(out_topic, payload, m.key(), m.partition())
        seen += len(msgs)
        producer.flush()
        consumer.commit(asynchronous=False)
    assert t0 is not None
    dt = time.monotonic() - t0
    consumer.close()
    return seen / dt


def inprocess(kafka: KafkaSettings, topic: str, n: int) -> float:
    consumer: KafkaConsumer = make_consumer(kafka, group_id=f"bench-read-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([topic])
    events = []
    while len(events) < n:
        for recs in consumer.poll(timeout_ms=500).values():
            events.extend(decode_event(r.value) for r in recs)
    consumer.close()
    learner = build_learner(MODEL)
    settle_heap(Settings().gc_threshold)  # the collector as the service sets it (process-wide from here on)
    t0 = time.perf_counter()
    for e in events:
        learner.predict_one(e)
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    return len(events) / (time.perf_counter() - t0)


def run_until_consumed(settings: Settings, n: int) -> tuple[float, Service]:
    """Run the service (its loop on a thread, no HTTP) until it consumed ``n`` records; (records/s from the first
    consumed batch to the last commit, the stopped service)."""
    svc = Service(settings, learners_from_settings(settings), CollectorRegistry(), serve_http=False)
    runner = threading.Thread(target=svc.run, daemon=True)
    runner.start()
    while svc.totals.consumed < n:  # coarse polling: do not steal the GIL from the loop being measured
        time.sleep(0.25)
        if not runner.is_alive():
            raise RuntimeError("service stopped early")
    svc.stop()
    runner.join(60)
    t = svc.totals
    assert t.first_batch_at is not None and t.last_commit_at is not None
    return t.consumed / (t.last_commit_at - t.first_batch_at), svc


def service(kafka: KafkaSettings, topic: str, n: int, models: dict[str, Any] | None = None) -> tuple[float, float]:
    """(events/s, served prequential accuracy) of one run of the service on ``kafka.client``'s backend (with
    ``models``: champion and challengers)."""
    settings = Settings(
        kafka=kafka.model_copy(update={"group_id": f"bench-svc-{uuid.uuid4().hex[:6]}"}),
        topics=TopicSettings(input=topic, predictions=f"{topic}-predictions", dead_letter=f"{topic}-dlq"),
        metrics=MetricsSettings(port=0), **({"models": models} if models else {"model": MODEL}),
    )
    eps, svc = run_until_consumed(settings, n)
    return eps, (svc.processor.find(Served) or svc.processor.require(Quality)).tracker.cumulative


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    d = KafkaSettings()
    ap.add_argument("--max-poll-records", type=int, default=d.max_poll_records)
    ap.add_argument("--linger-ms", type=int, default=d.linger_ms)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--fetch-max-wait-ms", type=int, default=d.fetch_max_wait_ms)
    ap.add_argument("--acks", choices=["all", "1", "0"], default=d.acks)
    ap.add_argument("--runs", type=int, default=3, help="service runs per backend (the median is reported)")
    args = ap.parse_args()
    n = args.events

    with kafka_cluster(heap="1g") as bootstrap:
        kafka = KafkaSettings(bootstrap_servers=bootstrap, max_poll_records=args.max_poll_records,
                              linger_ms=args.linger_ms, batch_size=args.batch_size,
                              fetch_max_wait_ms=args.fetch_max_wait_ms, acks=args.acks)
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(kafka, [topic], partitions=1)
        stream = from_generator("SEA", params={"variant": 0}, seed=1, id_prefix="b-")
        t0 = time.perf_counter()
        publish(itertools.islice(stream, n), topic, kafka, progress=False)
        produce_eps = n / (time.perf_counter() - t0)

        pass_eps = passthrough(kafka, topic, n)
        pass_c_eps = passthrough_confluent(kafka, topic, n)
        inproc_eps = inprocess(kafka, topic, n)
        variants: dict[str, tuple[dict[str, Any], dict[str, Any] | None]] = {
            "confluent": ({"client": "confluent"}, None), "kafka-python": ({"client": "kafka-python"}, None),
            "exactly-once": ({"client": "confluent", "exactly_once": True}, None),
            "challengers": ({"client": "confluent"}, CHALLENGERS)}
        runs: dict[str, list[float]] = {v: [] for v in variants}
        accuracy: dict[str, float] = {}
        for _ in range(args.runs):  # alternating, so a noisy moment does not hit one variant only
            for variant, (update, models) in variants.items():
                eps, accuracy[variant] = service(KafkaSettings(**{**kafka.model_dump(), **update}), topic, n, models)
                runs[variant].append(eps)
        svc_c, svc_py = statistics.median(runs["confluent"]), statistics.median(runs["kafka-python"])
        ratio_c = svc_c / min(pass_c_eps, inproc_eps)
        ratio_py = svc_py / min(pass_eps, inproc_eps)
        service_us, model_us = 1e6 / svc_c, 1e6 / inproc_eps
        overhead_us = service_us - model_us

    print(f"driftline throughput: {n} SEA events, 1 partition, Kafka at {bootstrap}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"settings: max_poll_records={kafka.max_poll_records} fetch_max_wait_ms={kafka.fetch_max_wait_ms} "
          f"max_partition_fetch_bytes={kafka.max_partition_fetch_bytes} linger_ms={kafka.linger_ms} "
          f"batch_size={kafka.batch_size} acks={kafka.acks} compression={kafka.compression_type} "
          f"gc_threshold={Settings().gc_threshold}")
    print(f"{'measurement':<56}{'events/s':>12}  runs")
    print(f"{'producer (driftline produce, for reference)':<56}{produce_eps:>12,.0f}")
    print(f"{'(a) pass-through, kafka-python':<56}{pass_eps:>12,.0f}")
    print(f"{'(a) pass-through, confluent-kafka (librdkafka)':<56}{pass_c_eps:>12,.0f}")
    print(f"{'(b) River LogisticRegression in-process':<56}{inproc_eps:>12,.0f}")
    for client, label in (("confluent", "librdkafka"), ("kafka-python", "kafka-python"),
                          ("exactly-once", "librdkafka, exactly_once"),
                          ("challengers", "librdkafka, 3 models (LR serving + NB, tree)")):
        shown = ", ".join(f"{r:,.0f}" for r in runs[client])
        print(f"{f'(c) service end to end, {label} (median)':<56}{statistics.median(runs[client]):>12,.0f}  {shown}")
    print(f"ratio_confluent = service / min(a confluent, b) = {ratio_c:.2f}; "
          f"ratio_kafka_python = {ratio_py:.2f}; prequential accuracy {accuracy['confluent']:.4f} "
          f"(kafka-python backend: {accuracy['kafka-python']:.4f})")
    print(f"outside the model, per event on librdkafka: {overhead_us:.1f} us (service {service_us:.1f} us, "
          f"model in-process {model_us:.1f} us)")
    print(json.dumps({"passthrough_eps": round(pass_eps, 1), "passthrough_eps_confluent": round(pass_c_eps, 1),
                      "inprocess_eps": round(inproc_eps, 1), "service_eps": round(svc_c, 1),
                      "service_eps_confluent": round(svc_c, 1), "service_eps_kafka_python": round(svc_py, 1),
                      "service_eps_exactly_once": round(statistics.median(runs["exactly-once"]), 1),
                      "service_eps_three_models": round(statistics.median(runs["challengers"]), 1),
                      "ratio_confluent": round(ratio_c, 3), "ratio_kafka_python": round(ratio_py, 3),
                      "overhead_us_confluent": round(overhead_us, 2)}))


if __name__ == "__main__":
    main()
