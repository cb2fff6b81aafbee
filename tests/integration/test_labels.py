"""Delayed labels through the real broker: labels before, after and never; TTL expiry in event time;
pending joins survive a restart through the checkpoint."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, read_topic, wait_for, write_config

pytestmark = [pytest.mark.integration]


def _produce(bootstrap: str, topic: str, items: list[tuple[dict[str, Any], int]]) -> None:
    """JSON values keyed by their id, with explicit record timestamps (event time drives the TTL)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for value, ts in items:
        producer.send(topic, key=value["id"].encode(), value=json.dumps(value).encode(), timestamp_ms=ts)
    producer.flush()
    producer.close()


def _events(n: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Unlabeled SEA events, and their labels by id."""
    events, truth = [], {}
    for e in itertools.islice(from_generator("SEA", seed=3, id_prefix="e"), n):
        truth[e["id"]] = e.pop("label")
        e.pop("timestamp", None)
        events.append(e)
    return events, truth


@pytest.mark.usefixtures("kafka_client")  # on both Kafka client libraries
def test_labels_before_after_and_never(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    t0 = int(time.time() * 1000) - 3_600_000
    events, truth = _events(300)
    lbl, exp = f"{topic_prefix}-labels", f"{topic_prefix}-expired"
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix,
                       topics={"labels": lbl, "expired": exp}, labels={"ttl_seconds": 600},
                       model={"name": "LogisticRegression", "classes": [False, True]})
    # labels of e0..e99 arrive before their events, e100..e199 after, e200..e299 never; one for no event
    early = [({"id": f"e{i}", "label": truth[f"e{i}"]}, t0 - 1000) for i in range(100)]
    late = [({"id": f"e{i}", "label": truth[f"e{i}"]}, t0 + 5000 + i) for i in range(100, 200)]
    _produce(kafka_bootstrap, lbl, [*early, ({"id": "ghost", "label": True}, t0)])
    svc = ServiceProcess(cfg, tmp_path / "svc.log")
    try:
        svc.wait_ready()
        _produce(kafka_bootstrap, f"{topic_prefix}-in",
                 [(e, t0 + i) for i, e in enumerate(events)])
        _produce(kafka_bootstrap, lbl, late)
        wait_for(lambda: svc.metric('driftline_labeled_events_total{model="LogisticRegression"}') >= 200, 90,
                 "200 labels joined")
        assert svc.metric('driftline_pending_labels{side="predictions"}') == 100
        # an event far later in event time moves the watermark past the TTL of e200..e299 and of "ghost"
        _produce(kafka_bootstrap, f"{topic_prefix}-in", [({"id": "clock", "features": {"0": 1.0, "1": 1.0,
                                                                                       "2": 1.0}}, t0 + 700_000)])
        wait_for(lambda: svc.metric('driftline_labels_expired_total{reason="ttl"}') >= 100, 60, "100 expired")
        m = svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()
    assert m['driftline_labeled_events_total{model="LogisticRegression"}'] == 200
    assert m['driftline_model_updates{model="LogisticRegression"}'] == 200
    assert m['driftline_labels_expired_total{reason="ttl"}'] == 100
    assert m["driftline_label_delay_seconds_count"] == 200
    assert m['driftline_label_coverage_ratio{model="LogisticRegression"}'] == pytest.approx(200 / 301)
    expired = [json.loads(r.value) for r in read_topic(kafka_bootstrap, exp)]
    assert sorted(e["id"] for e in expired) == sorted(f"e{i}" for i in range(200, 300))
    assert all("prediction" in e and e["event"]["features"] for e in expired)
    dead = read_topic(kafka_bootstrap, f"{topic_prefix}-dlq")
    assert [(r.key, dict(r.headers)["driftline.reason"]) for r in dead] == [(b"ghost", b"label_unknown_id")]
    assert len(read_topic(kafka_bootstrap, f"{topic_prefix}-pred")) == 301


def test_pending_joins_survive_a_restart(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    t0 = int(time.time() * 1000)
    lbl = f"{topic_prefix}-labels"
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, topics={"labels": lbl},
                       model={"name": "LogisticRegression", "classes": [False, True]},
                       checkpoint={"directory": str(tmp_path / "ckpt"), "every_events": 50})
    events, truth = _events(200)
    _produce(kafka_bootstrap, f"{topic_prefix}-in", [(e, t0 + i) for i, e in enumerate(events)])
    svc = ServiceProcess(cfg, tmp_path / "a.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="predicted"}') >= 200, 60, "200 predicted")
        assert svc.metric('driftline_pending_labels{side="predictions"}') == 200
    finally:
        assert svc.terminate() == 0, svc.log()
    # the labels come while the service is down; the restarted one still holds the predictions
    _produce(kafka_bootstrap, lbl, [({"id": k, "label": v}, t0 + 1000) for k, v in truth.items()])
    svc = ServiceProcess(cfg, tmp_path / "b.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_model_updates{model="LogisticRegression"}') >= 200, 60,
                 "200 learned after the restart")
        m = svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()
    assert m['driftline_pending_labels{side="predictions"}'] == 0
    assert m['driftline_events_total{outcome="predicted"}'] == 0  # nothing predicted twice
    assert read_topic(kafka_bootstrap, f"{topic_prefix}-dlq") == []
