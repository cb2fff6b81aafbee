from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from driftline.monitoring.histogram import FastHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _samples(reg: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(reg).decode().splitlines()
                  if line and not line.startswith("#") and "_created" not in line)


def _latencies(seed: int) -> list[float]:
    """2000 latencies, bucket boundaries among them (``le`` is inclusive)."""
    rng = random.Random(seed)
    return [rng.choice([0.001, 0.01, 1.0, 5.0]) if i % 7 == 0 else rng.expovariate(20) for i in range(2000)]


def _pair() -> tuple[CollectorRegistry, FastHistogram, CollectorRegistry, Histogram]:
    """Ours and prometheus_client's histogram, alike, each on its own registry."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    return (ours, FastHistogram("x_seconds", "doc", ["model"], buckets=BUCKETS, registry=ours),
            theirs, Histogram("x_seconds", "doc", ["model"], buckets=BUCKETS, registry=theirs))


def test_same_exposition_as_prometheus_client() -> None:
    values = _latencies(0)
    ours, fast, theirs, slow = _pair()
    for v in values:  # boundary values included: le is inclusive
        fast.labels("m").observe(v)
        slow.labels("m").observe(v)
    assert _samples(ours) == _samples(theirs)


def test_observing_a_batch_at_once_is_observing_each() -> None:
    values = _latencies(1)
    ours, fast, theirs, slow = _pair()
    for size in (1, 5, 15, 16, 500, 1463):  # the small-batch loop and the vectorised pass
        batch, values = values[:size], values[size:]
        fast.labels("m").observe_many(batch)
        for v in batch:
            slow.labels("m").observe(v)
    exact = [(o, t) for o, t in zip(_samples(ours), _samples(theirs), strict=True) if "_sum" not in o]
    assert all(o == t for o, t in exact) and len(exact) == 6  # 5 buckets and the count; the sums below
    sums = [float(x.split()[-1]) for x in (*_samples(ours), *_samples(theirs)) if "_sum" in x]
    assert abs(sums[0] - sums[1]) < 1e-9  # summed in another order


def test_unlabelled_histogram() -> None:
    reg = CollectorRegistry()
    h = FastHistogram("y_seconds", "doc", buckets=BUCKETS, registry=reg)
    h.observe(0.5)
    text = generate_latest(reg).decode()
    assert 'y_seconds_bucket{le="0.1"} 0.0' in text
    assert 'y_seconds_bucket{le="1.0"} 1.0' in text and "y_seconds_count 1.0" in text
