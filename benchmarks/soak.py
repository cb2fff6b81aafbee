"""Soak: a long stream through the real service (subprocess), watching memory and checkpoint cost.

A local Kafka broker, `driftline run` with River LogisticRegression and checkpoints every
10,000 events, and a producer of SEA events running alongside. Every ``--sample-s`` seconds
the service's resident memory (its process plus its producer child process, from /proc) is
sampled together with how many events it has consumed.

Last line, one JSON object: eps, rss_start_mb (first sample), rss_end_mb, rss_growth_mb (end minus
the first sample taken after 100,000 events), checkpoint_ms_p99 (from the service's histogram),
checkpoint_time_share (time spent writing checkpoints / wall time).

    python benchmarks/soak.py --events 1000000
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from driftline.settings import KafkaSettings
from driftline.stream.broker import free_port, kafka_cluster
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.kafka.publisher import publish
from driftline.stream.sources import from_generator


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MiB."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(body):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    for lab, v in m.get(name, []):
        if all(lab.get(k) == want for k, want in labels.items()):
            return v
    return 0.0


def histogram_quantile(q: float, m: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    """PromQL's histogram_quantile over cumulative buckets (linear within a bucket)."""
    buckets = sorted((float(lab["le"]), v) for lab, v in m.get(f"{name}_bucket", []))
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return buckets[-1][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--checkpoint-every", type=int, default=10_000)
    args = ap.parse_args()
    with kafka_cluster(heap="1g") as bootstrap:
        result = soak(bootstrap, args)
    print(json.dumps(result))


def soak(bootstrap: str, args: argparse.Namespace) -> dict[str, float]:
    n = args.events
    work = Path(tempfile.mkdtemp(prefix="driftline-soak-"))
    port = free_port()
    topic = f"soak-{os.getpid()}"
    cfg = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"soak-{os.getpid()}"},
        "topics": {"input": topic, "predictions": f"{topic}-pred", "dead_letter": f"{topic}-dlq"},
        "model": {"name": "LogisticRegression", "classes": [False, True]},
        "metrics": {"port": port},
        "checkpoint": {"directory": str(work / "ckpt"), "every_events": args.checkpoint_every,
                       "every_seconds": 3600},
        "log_level": "WARNING",
    }
    (work / "c.yaml").write_text(yaml.safe_dump(cfg))
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    ensure_topics(kafka, [topic])
    log = open(work / "service.log", "wb")  # noqa: SIM115
    svc = subprocess.Popen([sys.executable, "-m", "driftline.cli", "run", "--config", str(work / "c.yaml")],
                           stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, int, float]] = []  # (t, consumed, rss)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                scrape(port)
                break
            except OSError:
                if svc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"service did not start; see {work / 'service.log'}") from None
                time.sleep(0.5)
        stream = itertools.islice(from_generator("SEA", seed=3, id_prefix="s-"), n)
        producer = threading.Thread(target=publish, args=(stream, topic, kafka), kwargs={"progress": False})
        t0 = time.monotonic()
        producer.start()
        consumed = 0
        while consumed < n:
            time.sleep(min(args.sample_s, 1.0) if not samples else args.sample_s)
            if svc.poll() is not None:
                raise RuntimeError(f"service exited with {svc.returncode}; see {work / 'service.log'}")
            consumed = int(value(scrape(port), "driftline_events_total", outcome="consumed"))
            samples.append((time.monotonic() - t0, consumed, rss_mb(svc.pid)))
            print(f"t={samples[-1][0]:7.1f}s consumed={consumed:>9,} rss={samples[-1][2]:7.1f} MiB", flush=True)
        wall = time.monotonic() - t0
        final = scrape(port)
        producer.join()
    finally:
        svc.send_signal(signal.SIGTERM)
        svc.wait(60)
        log.close()

    after_100k = next((s for s in samples if s[1] >= 100_000), samples[0])
    ck_p99 = histogram_quantile(0.99, final, "driftline_checkpoint_duration_seconds") * 1000
    ck_sum = value(final, "driftline_checkpoint_duration_seconds_sum")
    ck_count = value(final, "driftline_checkpoint_duration_seconds_count")
    result = {
        "eps": round(n / wall, 1),
        "rss_start_mb": round(samples[0][2], 1),
        "rss_end_mb": round(samples[-1][2], 1),
        "rss_growth_mb": round(samples[-1][2] - after_100k[2], 1),
        "checkpoint_ms_p99": round(ck_p99, 2),
        "checkpoint_time_share": round(ck_sum / wall, 4),
    }
    print(f"{n:,} events in {wall:.1f}s ({result['eps']:,.0f} events/s, producer running alongside); "
          f"{int(ck_count)} checkpoints, p99 {ck_p99:.1f} ms, {100 * ck_sum / wall:.2f}% of wall time; "
          f"RSS {result['rss_start_mb']} -> {result['rss_end_mb']} MiB (growth after 100k events: "
          f"{result['rss_growth_mb']} MiB)")
    return result


if __name__ == "__main__":
    main()
