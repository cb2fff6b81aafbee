"""Throughput of the service against what its parts allow, on one topic of one real broker.

(a) passthrough: kafka-python consumes each event and publishes one ~100-byte record per event,
    flushing and committing per batch like the service (no decoding, no model): the client's ceiling.
(b) in-process: River LogisticRegression (with scaling) predict+learn on the same events, decoded
    beforehand (no Kafka).
(c) service: the real run loop end to end (consume, decode, validate, predict, publish the
    prediction, learn, flush, commit); (c2) the same on the librdkafka backend (kafka.client: confluent).

Each rate is measured from the first consumed batch to the last commit. Prints a table, then one
JSON line: passthrough_eps, inprocess_eps, service_eps, ratio = service / min(passthrough, inprocess).

    python benchmarks/throughput.py --events 100000
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import threading
import time
import uuid

from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry

from driftline.learners.factory import build_learner
from driftline.settings import KafkaSettings, MetricsSettings, ModelSettings, Settings, TopicSettings
from driftline.stream.broker import kafka_cluster
from driftline.stream.codec import decode_event
from driftline.stream.kafka.clients import ensure_topics, make_consumer, make_producer
from driftline.stream.kafka.publisher import publish
from driftline.stream.loop import Service
from driftline.stream.observers import Quality
from driftline.stream.sources import from_generator

MODEL = ModelSettings(name="LogisticRegression", classes=[False, True])


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


def inprocess(kafka: KafkaSettings, topic: str, n: int) -> float:
    consumer: KafkaConsumer = make_consumer(kafka, group_id=f"bench-read-{uuid.uuid4().hex[:6]}")
    consumer.subscribe([topic])
    events = []
    while len(events) < n:
        for recs in consumer.poll(timeout_ms=500).values():
            events.extend(decode_event(r.value) for r in recs)
    consumer.close()
    learner = build_learner(MODEL)
    t0 = time.perf_counter()
    for e in events:
        learner.predict_one(e)
        learner.learn_one(e, e.label)  # type: ignore[arg-type]
    return len(events) / (time.perf_counter() - t0)


def service(kafka: KafkaSettings, topic: str, n: int) -> tuple[float, float]:
    settings = Settings(
        kafka=kafka.model_copy(update={"group_id": f"bench-svc-{uuid.uuid4().hex[:6]}"}),
        topics=TopicSettings(input=topic, predictions=f"{topic}-predictions", dead_letter=f"{topic}-dlq"),
        model=MODEL, metrics=MetricsSettings(port=0),
    )
    svc = Service(settings, build_learner(MODEL), CollectorRegistry(), serve_http=False)
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
    dt = t.last_commit_at - t.first_batch_at
    acc = svc.processor.require(Quality).tracker.cumulative
    return svc.totals.consumed / dt, acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    d = KafkaSettings()
    ap.add_argument("--max-poll-records", type=int, default=d.max_poll_records)
    ap.add_argument("--linger-ms", type=int, default=d.linger_ms)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--fetch-max-wait-ms", type=int, default=d.fetch_max_wait_ms)
    ap.add_argument("--acks", choices=["all", "1", "0"], default=d.acks)
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
        inproc_eps = inprocess(kafka, topic, n)
        svc_eps, acc = service(kafka, topic, n)
        svc_confluent_eps, acc_confluent = service(kafka.model_copy(update={"client": "confluent"}), topic, n)
        ratio = svc_eps / min(pass_eps, inproc_eps)

    print(f"driftline throughput: {n} SEA events, 1 partition, Kafka at {bootstrap}, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"settings: max_poll_records={kafka.max_poll_records} fetch_max_wait_ms={kafka.fetch_max_wait_ms} "
          f"max_partition_fetch_bytes={kafka.max_partition_fetch_bytes} linger_ms={kafka.linger_ms} "
          f"batch_size={kafka.batch_size} acks={kafka.acks} compression={kafka.compression_type}")
    print(f"{'measurement':<44}{'events/s':>12}")
    print(f"{'producer (driftline produce, for reference)':<44}{produce_eps:>12,.0f}")
    print(f"{'(a) kafka-python pass-through':<44}{pass_eps:>12,.0f}")
    print(f"{'(b) River LogisticRegression in-process':<44}{inproc_eps:>12,.0f}")
    print(f"{'(c) driftline service end to end':<44}{svc_eps:>12,.0f}")
    print(f"{'(c2) the same on the librdkafka backend':<44}{svc_confluent_eps:>12,.0f}")
    print(f"ratio service / min(a, b) = {ratio:.2f}; service prequential accuracy {acc:.4f} "
          f"(librdkafka backend: {acc_confluent:.4f})")
    print(json.dumps({"passthrough_eps": round(pass_eps, 1), "inprocess_eps": round(inproc_eps, 1),
                      "service_eps": round(svc_eps, 1), "ratio": round(ratio, 3),
                      "service_eps_confluent": round(svc_confluent_eps, 1)}))


if __name__ == "__main__":
    main()
