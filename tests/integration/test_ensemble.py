"""sync.mode ensemble on the real broker: service processes in one consumer group publish signed snapshots of their
Hoeffding trees to the sync topic and serve the vote of every member's model; a member that starts loads them
before its first prediction, tampered and unsigned records are refused, a member that stops leaves the vote."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.sources import from_generator
from tests.helpers import (
    ServiceProcess,
    committed_offsets,
    end_offsets,
    produce_raw,
    read_topic,
    wait_for,
    write_config,
)
from tests.integration.test_sync import _stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
N_EVENTS = 9_000
RATE = 600.0
KEY = "an ensemble test key, 32+ chars long"
MEMBERS = "driftline_sync_round_members"
SENT = 'driftline_sync_updates_total{outcome="sent"}'


def _config(tmp_path: Path, bootstrap: str, prefix: str, name: str, *, model: str = "HoeffdingTreeClassifier",
            **sync: Any) -> Path:
    key_file = tmp_path / "sync.key"
    key_file.write_text(KEY + "\n")
    return write_config(tmp_path / f"{name}.yaml", bootstrap, prefix,
                        model={"name": model, "classes": [False, True]}, topics={"audit": f"{prefix}-audit"},
                        kafka={"max_poll_records": 200, "instance_id": f"{prefix}-{name}"},
                        checkpoint={"directory": str(tmp_path / name), "every_events": 5000, "every_seconds": 2.0},
                        sync={"mode": "ensemble", "key_file": str(key_file), "every_seconds": 1.0,
                              "every_events": 100_000, **sync})


def _refused(m: ServiceProcess, reason: str) -> float:
    return m.metric(f'driftline_sync_refused_records_total{{reason="{reason}"}}')


def test_members_serve_the_vote_of_every_members_snapshot_and_refuse_forged_ones(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, kafka_client: str) -> None:
    topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
    sync_topic = f"driftline.{group}.sync"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=PARTITIONS)
    events = list(itertools.islice(from_generator("SEA", seed=3, id_prefix="s-"), N_EVENTS))
    members = {n: ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, n), tmp_path / f"{n}.log")
               for n in ("a", "b")}
    c_serves = threading.Event()
    producer = threading.Thread(target=_stream, args=(kafka_bootstrap, topic, events, RATE),
                                kwargs={"gate": (N_EVENTS // 2, c_serves)})
    try:
        for m in members.values():
            m.wait_ready()
        producer.start()
        wait_for(lambda: all(m.metric(SENT) >= 2 and m.metric(MEMBERS) == 2 for m in members.values()), 90,
                 "both members to send snapshots and vote with each other's")
        # forged records: a copy of a's newest snapshot with its model bytes changed, an unsigned pickle
        a_key = f"{topic_prefix}-a".encode()
        newest = [r for r in read_topic(kafka_bootstrap, sync_topic, timeout=5) if r.key == a_key]
        assert newest and newest[-1].value is not None
        forged = newest[-1].value[:-16] + bytes(16)
        produce_raw(kafka_bootstrap, sync_topic, [forged, b"\x80\x04\x95cos\nsystem\n"],
                    keys=[b"forger", b"intruder"])
        wait_for(lambda: all(_refused(m, "signature") >= 1 and _refused(m, "unsigned") >= 1
                             for m in members.values()), 30, "the forged records to be refused")
        # a third member loads both snapshots before it serves
        c = members["c"] = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "c"), tmp_path / "c.log")
        c.wait_ready()
        assert c.metric(MEMBERS) == 3, c.log()
        wait_for(lambda: c.metric('driftline_events_total{outcome="predicted"}') > 0, 60, "the third member to serve")
        c_serves.set()
        wait_for(lambda: all(m.metric(MEMBERS) == 3 for m in members.values()), 30, "everyone to vote with c")
        producer.join(120)
        wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic) == end_offsets(kafka_bootstrap, topic),
                 120, "the group to consume and commit everything")
        # c stops gracefully: its snapshot leaves the others' vote
        assert members.pop("c").terminate() == 0, c.log()
        wait_for(lambda: all(m.metric(MEMBERS) == 2 for m in members.values()), 30, "c to leave the vote")
        stats = {n: m.metrics() for n, m in members.items()}
    finally:
        c_serves.set()
        if producer.ident is not None:
            producer.join(120)
        codes = {n: m.terminate() for n, m in members.items()}
        assert all(code == 0 for code in codes.values()), "\n".join(m.log() for m in members.values())

    for s in stats.values():  # the forged records never made it into a vote; the service went on
        assert s['driftline_sync_refused_records_total{reason="model_kind"}'] == 0
        assert s[SENT] >= 3
    preds = read_topic(kafka_bootstrap, f"{topic_prefix}-pred")
    assert {json.loads(r.value)["id"] for r in preds} == {e["id"] for e in events}
    audit = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-audit", timeout=5)]
    senders = {rec["member"] for rec in audit if rec.get("action") == "sync_snapshot"}
    assert senders == {f"{topic_prefix}-{n}" for n in ("a", "b", "c")}, senders


def test_a_member_with_another_model_is_refused_at_start(kafka_bootstrap: str, topic_prefix: str,
                                                          tmp_path: Path) -> None:
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [f"{topic_prefix}-in"], partitions=1)
    a = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "a"), tmp_path / "a.log")
    try:
        a.wait_ready()
        produce_raw(kafka_bootstrap, f"{topic_prefix}-in", [json.dumps({"id": f"e{i}", "features": {"x": i},
                                                                         "label": i % 2 == 0}).encode()
                                                             for i in range(50)])
        wait_for(lambda: a.metric(SENT) >= 1, 30, "A's first snapshot")
        other = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "b", model="GaussianNB"),
                               tmp_path / "b.log")
        assert other.proc.wait(120) == 2
        log = other.log()
        assert "holds the snapshot of member" in log and "HoeffdingTreeClassifier" in log, log
        assert "another sync.topic" in log
    finally:
        assert a.terminate() == 0, a.log()
