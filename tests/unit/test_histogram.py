from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from driftline.monitoring.histogram import FastHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _samples(reg: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(reg).decode().splitlines()
                  if line and not line.startswith("#") and "_created" not in line)


def test_same_exposition_as_prometheus_client() -> None:
    rng = random.Random(0)
    values = [rng.choice([0.001, 0.01, 1.0, 5.0]) if i % 7 == 0 else rng.expovariate(20) for i in range(2000)]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    fast = FastHistogram("x_seconds", "doc", ["model"], buckets=BUCKETS, registry=ours)
    slow = Histogram("x_seconds", "doc", ["model"], buckets=BUCKETS, registry=theirs)
    for v in values:  # boundary values included: le is inclusive
        fast.labels("m").observe(v)
        slow.labels("m").observe(v)
    assert _samples(ours) == _samples(theirs)


def test_unlabelled_histogram() -> None:
    reg = CollectorRegistry()
    h = FastHistogram("y_seconds", "doc", buckets=BUCKETS, registry=reg)
    h.observe(0.5)
    text = generate_latest(reg).decode()
    assert 'y_seconds_bucket{le="0.1"} 0.0' in text
    assert 'y_seconds_bucket{le="1.0"} 1.0' in text and "y_seconds_count 1.0" in text
