"""Scaling out: the same stream through one instance, and through three instances of one consumer group with
sync.mode none (each learns its own model from its partitions) and average (federated averaging every second),
with LogisticRegression; then the same three with a Hoeffding tree (which cannot be averaged): single, none,
and ensemble (each member serves the vote of its tree and the other members' snapshots, sent every second).

Real broker, 6 partitions, events keyed by id, produced at a fixed rate after every member is ready. Accuracy
is that of what the group served: each event's published prediction against its label, prequential (predicted
before learned), final and rolling (windows of a tenth of the stream, in stream order). Sync cost is CPU time:
the service processes' user+sys seconds (process_cpu_seconds_total, from ready to the last commit) per event,
average vs none. Prints a table per stream, then one JSON line: worst_gap_vs_single (largest single-instance
accuracy minus average-mode accuracy), best_gain_over_none (largest average minus none), sync_cpu_cost (CPU
per event with sync / without, minus 1), the ensemble's counterparts (ensemble_worst_gap_vs_single,
ensemble_best_gain_over_none, ensemble_cpu_cost) and its extra predict cost (ensemble_predict_p50_ratio: the
median time to predict one event, ensemble / none), and per stream the figures.

The rate (1,000 events/s, rounds every second: ~1,000 events a round, 60 rounds a stream) matters: federated
averaging gains over separate models where rounds are frequent against the stream (a round of 4,000 events gave
the group a third of the gain).

    python benchmarks/scaleout.py                      # ~30 min: both model kinds, four streams
    python benchmarks/scaleout.py --models linear      # ~16 min: the average-mode targets only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from members import Member

from driftline.settings import KafkaSettings
from driftline.stream.broker import kafka_cluster
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.sources import from_generator

PARTITIONS = 6
STREAMS: dict[str, dict[str, Any]] = {
    "SEA": {"name": "SEA", "params": {"variant": 0}},
    # an abrupt concept change halfway (classification function 0 -> 2)
    "Agrawal-drift": {"name": "Agrawal", "params": {"classification_function": 0},
                      "drift": {"classification_function": 2}},
    "Hyperplane-50": {"name": "Hyperplane", "params": {"n_features": 50, "n_drift_features": 10,
                                                       "mag_change": 0.001, "noise_percentage": 0.05}},
    "Hyperplane-200": {"name": "Hyperplane", "params": {"n_features": 200, "n_drift_features": 0,
                                                        "mag_change": 0.0, "noise_percentage": 0.05}},
    # linear only: a Hoeffding tree on 500 features learns at ~2 ms an event, beyond the rate produced here
    "Hyperplane-500": {"name": "Hyperplane", "params": {"n_features": 500, "n_drift_features": 0,
                                                        "mag_change": 0.0, "noise_percentage": 0.05},
                       "models": ("linear",)},
    "SEA-drift": {"name": "SEA", "params": {"variant": 0}, "drift": {"variant": 3}},
}


def _events(spec: dict[str, Any], n: int, seed: int) -> list[dict[str, Any]]:
    drift_at = n // 2 if "drift" in spec else None
    src = from_generator(spec["name"], params=spec["params"], seed=seed, drift_at=drift_at,
                         drift_params=spec.get("drift"), id_prefix="e")
    return list(itertools.islice(src, n))


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _committed_all(bootstrap: str, group: str, topic: str, ends: dict[int, int]) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        return all(tp.offset == ends[tp.partition] for tp in got)
    finally:
        c.close()


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ends-{uuid.uuid4().hex[:6]}"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    finally:
        c.close()


def _read_predictions(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out: dict[str, Any] = {}
    deadline = time.monotonic() + 120
    try:
        while len(out) < n and time.monotonic() < deadline:
            for m in c.consume(5000, 1.0):
                if m.error() is None:
                    p = json.loads(m.value())
                    out.setdefault(p["id"], p["prediction"])
    finally:
        c.close()
    return out


def _p99(metrics: list[dict[str, float]], name: str) -> float | None:
    return _quantile(metrics, name, 0.99)


def _quantile(metrics: list[dict[str, float]], name: str, q: float) -> float | None:
    """The ``q`` quantile's bucket bound of a histogram summed over members."""
    buckets: dict[float, float] = {}
    for m in metrics:
        for k, v in m.items():
            if k.startswith(f"{name}_bucket{{"):
                le = k.split('le="')[1].split('"')[0]
                buckets[float(le)] = buckets.get(float(le), 0.0) + v
    if not buckets or buckets[max(buckets)] == 0:
        return None
    total = buckets[max(buckets)]
    return next(le for le in sorted(buckets) if buckets[le] >= q * total)


TREE = {"name": "HoeffdingTreeClassifier", "classes": [False, True]}
LINEAR = {"name": "LogisticRegression", "classes": [False, True]}
KEY = "scaleout-benchmark-snapshot-key"  # sync.key (ensemble snapshots are signed)


def run(bootstrap: str, events: list[dict[str, Any]], *, members: int, mode: str, rate: float,
        workdir: Path, sync_every: float = 1.0, model: dict[str, Any] = LINEAR) -> dict[str, Any]:
    prefix = f"scale-{mode}-{members}-{uuid.uuid4().hex[:6]}"
    topic, group = f"{prefix}-in", f"{prefix}-group"
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [topic], partitions=PARTITIONS)
    procs = []
    for i in range(members):
        cfg = {"kafka": {"bootstrap_servers": bootstrap, "group_id": group, "client_id": f"{prefix}-{i}",
                         "max_poll_records": 500},
               "topics": {"input": topic, "predictions": f"{prefix}-pred", "dead_letter": f"{prefix}-dlq"},
               "model": model,
               "checkpoint": {"every_events": 100_000, "every_seconds": 1.0},
               "sync": {"mode": mode, "every_seconds": sync_every, "every_events": 100_000,
                        "round_timeout_seconds": 3.0, **({"key": KEY} if mode == "ensemble" else {})}}
        procs.append(Member(cfg, workdir, f"{prefix}-{i}"))
    try:
        for p in procs:
            p.wait_serving()
        time.sleep(4)  # the group settles (every member has its partitions)
        cpu0 = sum(p.metrics()["process_cpu_seconds_total"] for p in procs)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        t0 = time.monotonic()
        for i, e in enumerate(events):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.produce(topic, key=e["id"].encode(), value=json.dumps(e).encode())
            producer.poll(0)
        producer.flush(60)
        ends = _ends(bootstrap, topic)
        _wait(lambda: _committed_all(bootstrap, group, topic, ends), 300, "the group to commit everything")
        time.sleep(2.5)  # the last round
        final = [p.metrics() for p in procs]
    finally:
        for p in procs:
            p.stop()
    cpu = sum(m["process_cpu_seconds_total"] for m in final) - cpu0
    preds = _read_predictions(bootstrap, f"{prefix}-pred", len(events))
    hits = [preds.get(e["id"]) == e["label"] for e in events]
    window = len(events) // 10
    rolling = [sum(hits[i:i + window]) / window for i in range(0, len(hits) - window + 1, window)]
    rounds = max(m.get("driftline_sync_round", 0.0) for m in final)
    sent = sum(m.get('driftline_sync_bytes_total{direction="sent"}', 0.0) for m in final)
    return {"accuracy": sum(hits) / len(hits), "rolling": rolling, "predicted": len(preds),
            "cpu_s_per_kevent": 1000 * cpu / len(events), "rounds": rounds,
            "bytes_per_round": sent / rounds if rounds else 0.0,
            "merge_p99_s": _p99(final, "driftline_sync_merge_seconds"),
            "predict_p50_s": _quantile(final, "driftline_predict_latency_seconds", 0.5),
            "timed_out_rounds": max(m.get('driftline_sync_rounds_total{closed="timed_out"}', 0.0) for m in final)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--rate", type=float, default=1_000.0,
                    help="events/s produced (default 1000: 60 s and ~60 rounds of ~1000 events per stream)")
    ap.add_argument("--streams", default="SEA-drift,Hyperplane-50,Hyperplane-200,Hyperplane-500",
                    help=f"comma-separated, of {', '.join(STREAMS)}")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--sync-every", type=float, default=1.0, help="sync.every_seconds of the average runs")
    ap.add_argument("--models", default="linear,tree",
                    help="linear (single / none / average with LogisticRegression), tree (single / none / ensemble "
                         "with a Hoeffding tree), or both")
    args = ap.parse_args()
    print(f"# {platform.node()} {os.cpu_count()} CPUs, {args.events} events/stream at {args.rate:.0f}/s, "
          f"{PARTITIONS} partitions, sync.every_seconds {args.sync_every}")
    models = args.models.split(",")
    if not set(models) <= {"linear", "tree"}:
        ap.error(f"--models: linear, tree or both, not {args.models!r}")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with kafka_cluster() as bootstrap, tempfile.TemporaryDirectory(prefix="driftline-scaleout-") as tmp:
        for name in args.streams.split(","):
            events = _events(STREAMS[name], args.events, args.seed)
            kinds = [m for m in models if m in STREAMS[name].get("models", ("linear", "tree"))]
            plan = {  # run -> (members, sync.mode, model)
                **({"single": (1, "none", LINEAR), "none": (3, "none", LINEAR), "average": (3, "average", LINEAR)}
                   if "linear" in kinds else {}),
                **({"single-tree": (1, "none", TREE), "none-tree": (3, "none", TREE),
                    "ensemble-tree": (3, "ensemble", TREE)} if "tree" in kinds else {}),
            }
            results[name] = {
                run_name: run(bootstrap, events, members=members, mode=mode, rate=args.rate, workdir=Path(tmp),
                              sync_every=args.sync_every, model=model)
                for run_name, (members, mode, model) in plan.items()}
            print(f"\n## {name}")
            print("| run | accuracy | rolling accuracy (10 windows) | CPU s/1k events | rounds | bytes/round | "
                  "merge p99 | timed-out rounds | predict p50 |")
            print("|---|---|---|---|---|---|---|---|---|")
            for run_name, r in results[name].items():
                roll = " ".join(f"{a:.3f}" for a in r["rolling"])
                p99 = f"{r['merge_p99_s'] * 1000:.1f} ms" if r["merge_p99_s"] is not None else "-"
                p50 = f"{r['predict_p50_s'] * 1e6:.0f} us" if r["predict_p50_s"] is not None else "-"
                print(f"| {run_name} | {r['accuracy']:.4f} | {roll} | {r['cpu_s_per_kevent']:.3f} | "
                      f"{r['rounds']:.0f} | {r['bytes_per_round']:.0f} | {p99} | {r['timed_out_rounds']:.0f} | "
                      f"{p50} |", flush=True)
    summary: dict[str, Any] = {}
    if "linear" in models:
        summary.update(_compare(results, "single", "none", "average", ("worst_gap_vs_single",
                                                                      "best_gain_over_none", "sync_cpu_cost")))
    if "tree" in models:
        summary.update(_compare(results, "single-tree", "none-tree", "ensemble-tree", (
            "ensemble_worst_gap_vs_single", "ensemble_best_gain_over_none", "ensemble_cpu_cost")))
        p50s = [(r["ensemble-tree"]["predict_p50_s"], r["none-tree"]["predict_p50_s"]) for r in results.values()
                if "ensemble-tree" in r]
        p50_ratio = max((e / n for e, n in p50s if e and n), default=None)
        summary["ensemble_predict_p50_ratio"] = round(p50_ratio, 2) if p50_ratio else None
    summary["streams"] = {n: {k: round(r[k]["accuracy"], 4) for k in r} for n, r in results.items()}
    print(json.dumps(summary))


def _compare(results: dict[str, dict[str, dict[str, Any]]], single: str, none: str, synced: str,
             keys: tuple[str, str, str]) -> dict[str, float]:
    """The synced runs against the single instance (largest gap) and against mode none (largest gain), and the
    CPU per event with sync over without (summed over streams), minus 1."""
    runs = [r for r in results.values() if synced in r]
    gaps = [r[single]["accuracy"] - r[synced]["accuracy"] for r in runs]
    gains = [r[synced]["accuracy"] - r[none]["accuracy"] for r in runs]
    cpu_synced = sum(r[synced]["cpu_s_per_kevent"] for r in runs)
    cpu_none = sum(r[none]["cpu_s_per_kevent"] for r in runs)
    return {keys[0]: round(max(gaps), 4), keys[1]: round(max(gains), 4), keys[2]: round(cpu_synced / cpu_none - 1, 4)}

if __name__ == "__main__":
    main()
