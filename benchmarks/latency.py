"""Latency of the service under a steady load, read back from the topics (not the service's own histogram).

A producer sends SEA events at a fixed rate (default 10,000 events/s) to a 1-partition input topic while
`driftline run` (a child process, default settings, River LogisticRegression) predicts them. Afterwards both
topics are read back: each event's latency is its prediction record's Kafka timestamp minus its input
record's Kafka timestamp (both CreateTime, set by the producing clients on this machine's clock). The producer
sends for --warmup + --seconds; the first --warmup seconds are left out: a freshly started broker's JVM and the
service's first batches run several times slower for ~8 s here (latency climbs past a second, then settles).
Once per backend.

Prints a table, then one JSON line: p50_ms_<backend>, p99_ms_<backend>, max_ms_<backend>.

    python benchmarks/latency.py --rate 10000 --seconds 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as CTopicPartition

from driftline.settings import KafkaSettings
from driftline.stream.broker import free_port, kafka_cluster
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.sources import from_generator

BACKENDS = ("confluent", "kafka-python")


def _ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("the service did not become ready")


def _produce(bootstrap: str, topic: str, rate: float, seconds: float) -> int:
    """Send at ``rate`` events/s for ``seconds``, in 1 ms steps; returns the count sent."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all",
                         "delivery.report.only.error": True})
    events = from_generator("SEA", params={"variant": 0}, seed=7, id_prefix="l-")
    total = int(rate * seconds)
    sent = 0
    start = time.monotonic()
    while sent < total:
        due = min(int((time.monotonic() - start) * rate) + 1, total)
        for ev in itertools.islice(events, due - sent):
            producer.produce(topic, json.dumps(ev, separators=(",", ":")).encode(), str(ev["id"]).encode())
        sent = max(sent, due)
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(30)
    return sent


def _timestamps(bootstrap: str, topic: str) -> dict[str, int]:
    """event id -> the record's Kafka timestamp (ms), every record of the topic's partition 0."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"latency-read-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    try:
        _, end = consumer.get_watermark_offsets(CTopicPartition(topic, 0), timeout=30)
        consumer.assign([CTopicPartition(topic, 0, 0)])
        out: dict[str, int] = {}
        read = 0
        while read < end:
            for m in consumer.consume(num_messages=10_000, timeout=1.0):
                if m.error() is not None:
                    continue
                read = max(read, (m.offset() or 0) + 1)
                key = m.key()
                if key is not None:
                    out[key.decode() if isinstance(key, bytes) else key] = m.timestamp()[1]
        return out
    finally:
        consumer.close()


def measure(bootstrap: str, client: str, rate: float, seconds: float, warmup: float, work: Path) -> dict[str, float]:
    prefix = f"lat-{client}-{uuid.uuid4().hex[:6]}"
    topics = {"input": f"{prefix}-in", "predictions": f"{prefix}-pred", "dead_letter": f"{prefix}-dlq"}
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), list(topics.values()), partitions=1)
    port = free_port()
    config = work / f"{prefix}.yaml"
    config.write_text(yaml.safe_dump({
        "kafka": {"bootstrap_servers": bootstrap, "client": client, "group_id": prefix, "client_id": prefix},
        "topics": topics, "model": {"name": "LogisticRegression", "classes": [False, True]},
        "metrics": {"port": port}}))
    log = open(work / f"{prefix}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "driftline.cli", "run", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _ready(port, proc)
        sent = _produce(bootstrap, topics["input"], rate, warmup + seconds)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            predicted = _count(bootstrap, topics["predictions"])
            if predicted >= sent:
                break
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    inputs, preds = _timestamps(bootstrap, topics["input"]), _timestamps(bootstrap, topics["predictions"])
    skip = int(rate * warmup)
    ids = [f"l-{i}" for i in range(skip, sent)]
    lat = np.array([preds[i] - inputs[i] for i in ids if i in preds and i in inputs], dtype=np.float64)
    return {"events": float(len(lat)), "missing": float(len(ids) - len(lat)), "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "max": float(lat.max())}


def _count(bootstrap: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency-count"})
    try:
        low, high = consumer.get_watermark_offsets(CTopicPartition(topic, 0), timeout=10)
        return int(high - low)
    finally:
        consumer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000.0, help="events per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds measured, per backend")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds sent first and left out of the figures")
    ap.add_argument("--backend", choices=BACKENDS, action="append", help="default: both")
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with kafka_cluster(heap="1g") as bootstrap, tempfile.TemporaryDirectory(prefix="driftline-latency-") as work:
        for client in args.backend or BACKENDS:
            results[client] = measure(bootstrap, client, args.rate, args.seconds, args.warmup, Path(work))
    print(f"driftline latency: SEA events at {args.rate:,.0f}/s for {args.seconds:.0f}s per backend (after "
          f"{args.warmup:.0f}s left out), 1 partition, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, python {platform.python_version()}")
    print(f"{'backend':<16}{'events':>10}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for client, r in results.items():
        print(f"{client:<16}{r['events']:>10,.0f}{r['p50']:>10.1f}{r['p99']:>10.1f}{r['max']:>10.1f}"
              + (f"  ({r['missing']:.0f} without a prediction)" if r["missing"] else ""))
    line: dict[str, float] = {}
    for client, r in results.items():
        suffix = client.replace("-", "_")
        line.update({f"p50_ms_{suffix}": round(r["p50"], 2), f"p99_ms_{suffix}": round(r["p99"], 2),
                     f"max_ms_{suffix}": round(r["max"], 2)})
    print(json.dumps(line))


if __name__ == "__main__":
    main()
