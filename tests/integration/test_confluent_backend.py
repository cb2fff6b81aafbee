"""The service on the librdkafka backend (kafka.client: confluent), end to end on a real broker: every event
predicted, learned and committed, a bad record dead-lettered with its reason. (The rest of the integration
suite runs on kafka-python, the default until it runs on both.)"""

from __future__ import annotations

import itertools
import json
import threading

import pytest
from prometheus_client import CollectorRegistry

from driftline.learners.factory import build_learner
from driftline.settings import Settings
from driftline.stream.kafka.confluent import ConfluentBackend
from driftline.stream.loop import Service
from driftline.stream.sources import from_generator
from tests.helpers import committed_offsets, produce_events, produce_raw, read_topic, wait_for

pytestmark = [pytest.mark.integration]


def test_the_service_runs_on_librdkafka(kafka_bootstrap: str, topic_prefix: str) -> None:
    events = list(itertools.islice(from_generator("SEA", params={"variant": 0}, seed=3, id_prefix="c"), 3000))
    s = Settings(kafka={"bootstrap_servers": kafka_bootstrap, "client": "confluent", "group_id": f"{topic_prefix}-g"},
                 topics={"input": f"{topic_prefix}-in", "predictions": f"{topic_prefix}-pred",
                         "dead_letter": f"{topic_prefix}-dlq"},
                 model={"name": "LogisticRegression", "classes": [False, True]})
    produce_events(kafka_bootstrap, s.topics.input, events[:1500])
    produce_raw(kafka_bootstrap, s.topics.input, [b'{"id": "bad", "features": {"x": "1"}, "lable": 1}'])
    produce_events(kafka_bootstrap, s.topics.input, events[1500:])
    svc = Service(s, build_learner(s.model), CollectorRegistry(), serve_http=False)
    assert isinstance(svc.kafka, ConfluentBackend)
    runner = threading.Thread(target=svc.run, daemon=True)
    runner.start()
    try:
        wait_for(lambda: svc.totals.consumed >= 3001, 120, "3001 records consumed")
        wait_for(lambda: committed_offsets(kafka_bootstrap, s.kafka.group_id, s.topics.input) == {0: 3001}, 30,
                 "offsets committed")
    finally:
        svc.stop()
        runner.join(60)
    assert not runner.is_alive()
    t = svc.totals
    assert (t.predicted, t.learned, t.dead_lettered) == (3000, 3000, 1)
    preds = read_topic(kafka_bootstrap, s.topics.predictions)
    assert len(preds) == 3000 and {json.loads(r.value)["id"] for r in preds} == {e["id"] for e in events}
    dead = read_topic(kafka_bootstrap, s.topics.dead_letter)
    assert len(dead) == 1 and dict(dead[0].headers)["driftline.reason"] == b"invalid_event"
