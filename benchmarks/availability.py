"""Availability: the longest time an input event waits for its prediction while the group changes.

Real broker, River LogisticRegression, a two-instance group with static membership (`kafka.instance_id`) on a
4-partition topic, the producer at a fixed rate (default 2,000 events/s) throughout. Scenarios, each on fresh
topics:

(a) kill_restart: SIGKILL of one instance, its successor (same instance id, same state directory) started at
    once;
(b) rolling: both instances replaced one at a time (SIGTERM one, start its successor, wait until it serves,
    then the other), as a rolling deploy does;
(c) join: a third instance joins.

The wait of an event is its prediction record's Kafka timestamp minus the time it was produced. Also measured:
process start (spawn to serving: imports, connection, restore), the median of the starts in the run. Prints a
table, then one JSON line: max_gap_s_kill_restart, max_gap_s_rolling, max_gap_s_join, start_s.

`--membership dynamic` runs members without instance ids (kafka.group_protocol auto then picks the consumer
protocol, KIP-848, on a Kafka 4 broker; `--group-protocol` forces one), for the rolling and join scenarios
(a dynamic member killed is replaced only after its session expires).

    python benchmarks/availability.py --rate 2000
    python benchmarks/availability.py --membership dynamic
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from members import Member

from driftline.settings import KafkaSettings
from driftline.stream.broker import kafka_cluster
from driftline.stream.kafka.clients import ensure_topics

PARTITIONS = 4
SETTLE_S = 10.0  # steady state before and after the change


class Stream(threading.Thread):
    """Events at a fixed rate until stopped; the wall-clock time each was produced, by id."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
        self.topic, self.rate = topic, rate
        self.sent: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        t0, i = time.monotonic(), 0
        while not self.halt.is_set():
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            eid = f"e{i}"
            x = {"x1": (i * 7 % 10) * 1.0, "x2": (i * 3 % 10) * 1.0, "x3": (i % 10) * 1.0}
            event = {"id": eid, "features": x, "label": x["x1"] + x["x2"] <= 8}
            self.sent[eid] = time.time()
            self.producer.produce(self.topic, key=eid.encode(), value=json.dumps(event).encode())
            self.producer.poll(0)
            i += 1
        self.producer.flush(30)


def _waits(bootstrap: str, topic: str, sent: dict[str, float]) -> list[float]:
    """Seconds from each event's production to its (first) prediction's record timestamp."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    first: dict[str, float] = {}
    deadline = time.monotonic() + 120
    try:
        while len(first) < len(sent) and time.monotonic() < deadline:
            for m in c.consume(5000, 1.0):
                if m.error() is None:
                    eid = json.loads(m.value())["id"]
                    first.setdefault(eid, m.timestamp()[1] / 1000)
    finally:
        c.close()
    missing = set(sent) - set(first)
    if missing:
        raise RuntimeError(f"{len(missing)} events never predicted")
    return [first[i] - sent[i] for i in sent]


def scenario(bootstrap: str, workdir: Path, rate: float, name: str,
             change: Callable[[dict[str, Member], Callable[[str], Member]], None], static: bool = True,
             group_protocol: str = "auto", heartbeat_ms: int | None = None) -> dict[str, Any]:
    prefix = f"avail-{name}-{uuid.uuid4().hex[:6]}"
    topic = f"{prefix}-in"
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [topic], partitions=PARTITIONS)
    starts: list[float] = []

    def member(instance: str) -> Member:
        cfg = {"kafka": {"bootstrap_servers": bootstrap, "group_id": f"{prefix}-group", "client_id": prefix,
                         "session_timeout_ms": 30_000, "max_poll_records": 500, "group_protocol": group_protocol,
                         **({"instance_id": instance} if static else {}),
                         **({"heartbeat_interval_ms": heartbeat_ms} if heartbeat_ms else {})},
               "topics": {"input": topic, "predictions": f"{prefix}-pred", "dead_letter": f"{prefix}-dlq"},
               "model": {"name": "LogisticRegression", "classes": [False, True]},
               "checkpoint": {"directory": str(workdir / prefix / instance), "every_events": 5000,
                              "every_seconds": 1.0}}
        return Member(cfg, workdir, f"{prefix}-{instance}")

    def serving(m: Member) -> Member:
        starts.append(m.wait_serving())
        return m

    members = {i: serving(member(i)) for i in ("a", "b")}
    stream = Stream(bootstrap, topic, rate)
    stream.start()
    try:
        time.sleep(SETTLE_S)
        t_change = time.time()
        change(members, lambda i: serving(member(i)))
        time.sleep(SETTLE_S)
    finally:
        stream.halt.set()
        stream.join(60)
        time.sleep(3)
        consumed = {}
        for i, m in members.items():
            try:
                consumed[i] = int(m.metrics()['driftline_events_total{outcome="consumed"}'])
            except OSError:
                consumed[i] = -1
            m.stop()
    waits = dict(zip(stream.sent, _waits(bootstrap, f"{prefix}-pred", stream.sent), strict=True))
    first = min(stream.sent.values())
    # the change's effect: events produced from 2 s before it on; the steady state: from 3 s after the stream
    # started (the group's own start settled) to 2 s before the change
    around = [w for i, w in waits.items() if stream.sent[i] >= t_change - 2]
    steady = [w for i, w in waits.items() if first + 3 <= stream.sent[i] < t_change - 2]
    return {"max_gap_s": max(around), "steady_p99_s": statistics.quantiles(steady, n=100)[98],
            "steady_max_s": max(steady), "events": len(waits), "starts_s": starts, "consumed": consumed}


def kill_restart(members: dict[str, Member], start: Callable[[str], Member]) -> None:
    members["a"].stop(signal.SIGKILL)
    members["a"] = start("a")


def rolling(members: dict[str, Member], start: Callable[[str], Member]) -> None:
    for i in ("a", "b"):
        members[i].stop(signal.SIGTERM)
        members[i] = start(i)


def join(members: dict[str, Member], start: Callable[[str], Member]) -> None:
    members["c"] = start("c")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=2_000.0)
    ap.add_argument("--membership", choices=["static", "dynamic"], default="static")
    ap.add_argument("--group-protocol", choices=["auto", "classic", "consumer"], default="auto")
    ap.add_argument("--heartbeat-ms", type=int, default=None,
                    help="kafka.heartbeat_interval_ms (on the consumer protocol: the group's; default: the broker's)")
    args = ap.parse_args()
    static = args.membership == "static"
    print(f"# {platform.node()} {os.cpu_count()} CPUs, {args.rate:.0f} events/s, {PARTITIONS} partitions, "
          f"{args.membership} members, group protocol {args.group_protocol}, session timeout 30 s, heartbeat "
          f"{args.heartbeat_ms or 'default'} ms")
    results = {}
    changes = (("kill_restart", kill_restart), ("rolling", rolling), ("join", join))
    with kafka_cluster() as bootstrap, tempfile.TemporaryDirectory(prefix="driftline-availability-") as tmp:
        for name, change in changes if static else changes[1:]:
            results[name] = scenario(bootstrap, Path(tmp), args.rate, name, change, static, args.group_protocol,
                                     args.heartbeat_ms)
            r = results[name]
            print(f"{name}: longest wait {r['max_gap_s']:.2f} s (before the change: p99 "
                  f"{r['steady_p99_s'] * 1000:.0f} ms, max {r['steady_max_s'] * 1000:.0f} ms; "
                  f"{r['events']} events; process starts {', '.join(f'{s:.1f}' for s in r['starts_s'])} s; "
                  f"consumed by the members at the end: {r['consumed']})",
                  flush=True)
    starts = [s for r in results.values() for s in r["starts_s"]]
    print(json.dumps({**{f"max_gap_s_{name}": round(r["max_gap_s"], 2) for name, r in results.items()},
                      "start_s": round(statistics.median(starts), 2)}))


if __name__ == "__main__":
    main()
