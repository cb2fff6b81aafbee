"""One model for the group (sync.mode average): several service processes in one consumer group merge their
learning over the sync topic of the real broker, in rounds that every member decides alike."""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kafka import KafkaProducer

from driftline.learners.mergeable import decode
from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, committed_offsets, end_offsets, read_topic, wait_for, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 6
N_EVENTS = 24_000
RATE = 1_500.0  # the stream lasts 16 s: ~16 rounds, and the fourth member joins mid-stream


def _config(tmp_path: Path, bootstrap: str, prefix: str, name: str, *, model: str = "LogisticRegression",
            model_cfg: dict[str, Any] | None = None, kafka: dict[str, Any] | None = None, **sync: Any) -> Path:
    return write_config(tmp_path / f"{name}.yaml", bootstrap, prefix,
                        model=model_cfg or {"name": model, "classes": [False, True]},
                        topics={"audit": f"{prefix}-audit"}, kafka={"max_poll_records": 200, **(kafka or {})},
                        checkpoint={"directory": str(tmp_path / name), "every_events": 5000, "every_seconds": 2.0},
                        sync={"mode": "average", "every_seconds": 1.0, "every_events": 100_000,
                              "round_timeout_seconds": 3.0, **sync})


def _stream(bootstrap: str, topic: str, events: list[dict[str, Any]], rate: float,
            gate: tuple[int, threading.Event] | None = None) -> None:
    """Events at ``rate``; past index ``gate[0]`` at 50 events/s until ``gate[1]`` is set (the test's move has
    happened mid-stream, however long the backend takes to rebalance)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    due = time.monotonic()
    try:
        for i, e in enumerate(events):
            due += 1 / (50.0 if gate is not None and i >= gate[0] and not gate[1].is_set() else rate)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            producer.send(topic, key=e["id"].encode(), value=json.dumps(e).encode())
        producer.flush()
    finally:
        producer.close()


def _events(seed: int, n: int = N_EVENTS) -> list[dict[str, Any]]:
    return list(itertools.islice(from_generator("SEA", seed=seed, id_prefix="s-"), n))


def _sync_records(bootstrap: str, topic: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    return [decode(r.value) for r in read_topic(bootstrap, topic, timeout=5)]  # type: ignore[misc]


def _round_and_version(m: ServiceProcess) -> tuple[float, float]:
    """The member's adopted round and model version, as a pair from two scrapes that agree: rounds close
    every second and a scrape reads the gauges one after the other, so one scrape can catch a round between."""
    last = None
    for _ in range(50):
        s = m.metrics()
        pair = (s["driftline_sync_round"], s['driftline_model_version{model="LogisticRegression"}'])
        if pair == last:
            return pair
        last = pair
    raise AssertionError(f"the round and version never held still for two scrapes: {last}")


def test_members_merge_the_same_model_every_round_and_a_new_member_starts_from_it(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, kafka_client: str) -> None:
    topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=PARTITIONS)
    events = _events(seed=11)
    members = {n: ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, n), tmp_path / f"{n}.log")
               for n in ("a", "b", "c")}
    d_serves = threading.Event()
    producer = threading.Thread(target=_stream, args=(kafka_bootstrap, topic, events, RATE),
                                kwargs={"gate": (N_EVENTS // 2, d_serves)})
    try:
        for m in members.values():
            m.wait_ready()
        producer.start()
        wait_for(lambda: sum(m.metric('driftline_events_total{outcome="consumed"}') for m in members.values())
                 >= N_EVENTS // 4, 90, "the group to consume a quarter of the stream")
        d = members["d"] = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "d"), tmp_path / "d.log")
        d.wait_ready()
        # the group's model is adopted at start, before the first prediction
        joined_round, joined_version = _round_and_version(d)
        wait_for(lambda: d.metric('driftline_events_total{outcome="predicted"}') > 0, 60, "the fourth member to serve")
        d_serves.set()
        producer.join(120)
        wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic) == end_offsets(kafka_bootstrap, topic),
                 120, "the group to consume and commit everything")
        time.sleep(3)  # a last round or two
        stats = {n: m.metrics() for n, m in members.items()}
    finally:
        d_serves.set()
        if producer.ident is not None:
            producer.join(120)
        codes = {n: m.terminate() for n, m in members.items()}
        assert all(c == 0 for c in codes.values()), "\n".join(m.log() for m in members.values())

    assert joined_round >= 3 and joined_version == joined_round + 1, (joined_round, joined_version)
    assert stats["d"]['driftline_events_total{outcome="predicted"}'] > 0, "the fourth member never served"

    # every member computed the same merged model for every round it took part in (audit: one per member)
    audit = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-audit", timeout=5)]
    digests: dict[int, set[str]] = collections.defaultdict(set)
    seen_by: dict[int, set[str]] = collections.defaultdict(set)
    for rec in audit:
        if rec.get("action") == "sync_round":
            digests[rec["round"]].add(rec["digest"])
            seen_by[rec["round"]].add(rec["member"])
    assert len(digests) >= 10, f"only {len(digests)} rounds"
    assert all(len(d) == 1 for d in digests.values()), {r: d for r, d in digests.items() if len(d) > 1}
    assert max(len(s) for s in seen_by.values()) == 4

    # ... and that model is the weighted mean of the members' updates, recomputed here from the topic
    records = _sync_records(kafka_bootstrap, f"driftline.{group}.sync")
    updates = {(h["round"], h["member"]): (h, p) for h, p in records if h["type"] == "update"}
    checked = 0
    for h, p in records:
        if h["type"] != "merged":
            continue
        assert p is not None and h["digest"] in digests[h["round"]]
        ups = [updates[(h["round"], m)] for m in h["members"]]
        weights = np.array([u[0]["weight"] for u in ups], dtype=float)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(ups), 1 / len(ups))
        keys = sorted(set().union(*(u[1]["w"].keys for u in ups if u[1] is not None)))
        expect = np.zeros(len(keys))
        for w, (_, up) in zip(weights, ups, strict=True):
            assert up is not None
            have = up["w"].as_dict()
            expect += w * np.array([have.get(k, 0.0) for k in keys])
        assert p["w"].keys == tuple(keys)
        np.testing.assert_allclose(p["w"].values, expect, rtol=1e-12, atol=1e-15)
        checked += 1
    assert checked >= 10

    # every event predicted, the group learned every one
    preds = read_topic(kafka_bootstrap, f"{topic_prefix}-pred")
    assert {json.loads(r.value)["id"] for r in preds} == {e["id"] for e in events}
    learned = sum(s['driftline_events_total{outcome="learned"}'] for s in stats.values())
    assert learned >= N_EVENTS
    acc = 'driftline_prequential_accuracy_ratio{model="LogisticRegression",window="cumulative"}'
    for n, s in stats.items():
        complete, timed_out = (s[f'driftline_sync_rounds_total{{closed="{c}"}}'] for c in ("complete", "timed_out"))
        print(f"{n}: round {s['driftline_sync_round']:.0f}, rounds complete {complete:.0f} timed out "
              f"{timed_out:.0f}, accuracy {s.get(acc, float('nan')):.4f}")
        assert s["driftline_sync_diverged_rounds_total"] == 0


def _two_members(tmp_path: Path, bootstrap: str, prefix: str, events: list[dict[str, Any]],
                 config: Any) -> dict[str, dict[str, float]]:
    """Members "a" and "b" (``config(name)``: their config file) through ``events`` at 1,000 a second, until the
    group committed everything and a last round passed; their metrics then (they stop cleanly)."""
    topic, group = f"{prefix}-in", f"{prefix}-group"
    members = {m: ServiceProcess(config(m), tmp_path / f"{m}.log") for m in ("a", "b")}
    try:
        for m in members.values():
            m.wait_ready()
        _stream(bootstrap, topic, events, 1_000.0)
        wait_for(lambda: committed_offsets(bootstrap, group, topic) == end_offsets(bootstrap, topic),
                 120, "the group to consume and commit everything")
        time.sleep(3)  # a last round
        return {name: m.metrics() for name, m in members.items()}
    finally:
        codes = {name: m.terminate() for name, m in members.items()}
        assert all(c == 0 for c in codes.values()), "\n".join(m.log() for m in members.values())


CONTINUAL = {"name": "Continual", "classes": [False, True],
             "backbone": {"kind": "identity", "features": ["0", "1", "2"]},
             "params": {"hidden": 16, "window_events": 200, "window_seconds": 1.0, "lr": 0.01,
                        "strategy": "Replay", "strategy_params": {"mem_size": 500}}}


def test_continual_learners_average_their_networks_trained_in_the_background(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Two members with the Continual learner (windows trained in a worker thread, Replay): every round, both
    compute the same network, the weighted mean of their updates (recomputed here), and serve it."""
    topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=PARTITIONS)
    n = 8_000
    events = _events(seed=5, n=n)
    stats = _two_members(tmp_path, kafka_bootstrap, topic_prefix, events, lambda m: _config(
        tmp_path, kafka_bootstrap, topic_prefix, m, model_cfg=CONTINUAL))
    digests = _round_digests(kafka_bootstrap, f"{topic_prefix}-audit")
    assert len(digests) >= 4, f"only {len(digests)} rounds"
    assert all(len(d) == 1 for d in digests.values()), {r: d for r, d in digests.items() if len(d) > 1}
    records = _sync_records(kafka_bootstrap, f"driftline.{group}.sync")
    updates = {(h["round"], h["member"]): (h, p) for h, p in records if h["type"] == "update"}
    checked = 0
    for h, p in records:
        if h["type"] != "merged" or len(h["members"]) < 2:
            continue
        assert p is not None
        ups = [updates[(h["round"], m)] for m in h["members"]]
        weights = np.array([u[0]["weight"] for u in ups], dtype=float)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(ups), 1 / len(ups))
        for name in ("head/0.weight", "out.w/true", "out.w/false"):  # the hidden layer, each class's row
            expect = sum(w * u[1][name].values for w, u in zip(weights, ups, strict=True) if u[1] is not None)
            np.testing.assert_allclose(p[name].values, expect, rtol=1e-12, atol=1e-15)
        checked += 1
    assert checked >= 3
    preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
    assert {p["id"] for p in preds} == {e["id"] for e in events}
    for name, s in stats.items():
        assert s["driftline_sync_diverged_rounds_total"] == 0, name
        assert s['driftline_model_version{model="Continual"}'] == s["driftline_sync_round"] + 1, name
    predicted = {p["id"]: p["prediction"] for p in preds}
    late = events[-2_000:]
    accuracy = sum(predicted[e["id"]] == e["label"] for e in late) / len(late)
    assert accuracy > 0.8, accuracy  # SEA: the group's network learned the concept


def test_with_privacy_the_sent_noise_has_the_set_scale_and_the_reported_epsilon_is_the_accountants(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """sync.privacy on two services: what each update carries beyond the group model its member started the round
    from is the clipped change plus Gaussian noise of standard deviation noise_multiplier x clip (measured on the
    topic: the change is clipped to a norm far below the noise), and every member reports Opacus's epsilon for the
    updates it sent, in its metrics and in every round's audit record."""
    from driftline.learners.privacy import epsilon

    topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=PARTITIONS)
    clip, noise_multiplier, delta = 0.001, 5.0, 1e-5
    events = list(itertools.islice(from_generator("Hyperplane", params={"n_features": 20}, seed=4, id_prefix="h-"),
                                   6_000))
    model = {"name": "LogisticRegression", "classes": [False, True], "scale": False}
    privacy = {"clip": clip, "noise_multiplier": noise_multiplier, "delta": delta}
    stats = _two_members(tmp_path, kafka_bootstrap, topic_prefix, events, lambda m: _config(
        tmp_path, kafka_bootstrap, topic_prefix, m, model_cfg=model, kafka={"instance_id": f"member-{m}"},
        privacy=privacy))
    records = _sync_records(kafka_bootstrap, f"driftline.{group}.sync")
    merged = {h["round"]: p for h, p in records if h["type"] == "merged"}
    noise: list[np.ndarray] = []
    sent: collections.Counter[str] = collections.Counter()
    for h, p in records:
        if h["type"] != "update":
            continue
        sent[h["member"]] += 1
        assert h["weight"] == 1.0 and p is not None  # every member weighs the same: its count is not sent
        base = merged.get(h["round"] - 1)
        if base is None:  # the first round: from the initial model
            continue
        for name in ("w", "b"):
            have = base[name].as_dict()
            noise.append(p[name].values - np.array([have.get(k, 0.0) for k in p[name].keys]))
    values = np.concatenate(noise)
    assert len(values) >= 200, len(values)
    assert float(values.std()) == pytest.approx(clip * noise_multiplier, rel=0.15)
    assert abs(float(values.mean())) < 0.2 * clip * noise_multiplier
    audit = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-audit", timeout=5)]
    for name, s in stats.items():
        member = f"member-{name}"
        assert sent[member] >= 3
        assert s["driftline_sync_privacy_epsilon"] == pytest.approx(epsilon(sent[member], noise_multiplier, delta))
        rounds = [r for r in audit if r.get("action") == "sync_round" and r["member"] == member]
        assert rounds and all(r["delta"] == delta and r["epsilon"] > 0 for r in rounds)


def _round_digests(bootstrap: str, audit_topic: str) -> dict[int, set[str]]:
    digests: dict[int, set[str]] = collections.defaultdict(set)
    for r in read_topic(bootstrap, audit_topic, timeout=5):
        rec = json.loads(r.value)
        if rec.get("action") == "sync_round":
            digests[rec["round"]].add(rec["digest"])
    return digests


@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_a_member_sigkilled_mid_round_and_restarted_costs_a_timeout_and_no_divergence(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path, exactly_once: bool) -> None:
    """B dies between rounds' records (SIGKILL) and comes back with its checkpoint: the others close the rounds
    it misses after round_timeout_seconds, B resumes from its checkpoint and the group's model, and every member
    still computes the same model every round. With exactly_once, each update is in its save point's
    transaction (read_committed: an aborted one is never merged)."""
    topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=PARTITIONS)
    events = _events(seed=12)
    cfgs = {n: _config(tmp_path, kafka_bootstrap, topic_prefix, n, kafka={"exactly_once": exactly_once})
            for n in ("a", "b", "c")}
    members = {n: ServiceProcess(c, tmp_path / f"{n}0.log") for n, c in cfgs.items()}
    producer = threading.Thread(target=_stream, args=(kafka_bootstrap, topic, events, RATE))
    try:
        for m in members.values():
            m.wait_ready()
        producer.start()
        wait_for(lambda: members["b"].metric('driftline_sync_updates_total{outcome="merged"}') >= 4, 60,
                 "B's fourth merged update")
        members["b"].kill()
        members["b"] = ServiceProcess(cfgs["b"], tmp_path / "b1.log")
        members["b"].wait_ready()
        restarted_round = members["b"].metric("driftline_sync_round")
        producer.join(120)
        wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic) == end_offsets(kafka_bootstrap, topic),
                 120, "the group to consume and commit everything")
        wait_for(lambda: members["b"].metric('driftline_sync_updates_total{outcome="merged"}') >= 2, 30,
                 "B's updates to be merged again")
        stats = {n: m.metrics() for n, m in members.items()}
    finally:
        if producer.ident is not None:
            producer.join(120)
        codes = {n: m.terminate() for n, m in members.items()}
        assert all(c == 0 for c in codes.values()), "\n".join(m.log() for m in members.values())
    assert restarted_round >= 4, "B did not start from the group's model"
    # the update B was sending when it died: its restart found out whether it made its round
    assert stats["b"]["driftline_sync_unsynced_labels_dropped_total"] == 0
    assert stats["a"]['driftline_sync_rounds_total{closed="timed_out"}'] >= 1, "no round waited for the dead B"
    digests = _round_digests(kafka_bootstrap, f"{topic_prefix}-audit")
    assert len(digests) >= 10 and all(len(d) == 1 for d in digests.values()), digests
    assert all(s["driftline_sync_diverged_rounds_total"] == 0 for s in stats.values())
    preds = read_topic(kafka_bootstrap, f"{topic_prefix}-pred")
    assert {json.loads(r.value)["id"] for r in preds} == {e["id"] for e in events}


def test_a_member_with_another_model_is_refused_at_start(kafka_bootstrap: str, topic_prefix: str,
                                                          tmp_path: Path) -> None:
    topic = f"{topic_prefix}-in"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=2)
    a = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "a"), tmp_path / "a.log")
    try:
        a.wait_ready()
        wait_for(lambda: a.metric('driftline_sync_updates_total{outcome="sent"}') >= 1, 30, "A's first update")
        other = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "b", model="Perceptron"),
                               tmp_path / "b.log")
        assert other.proc.wait(120) == 2
        log = other.log()
        assert "holds the model of member" in log and '"name": "LogisticRegression"' in log, log
        assert '"name": "Perceptron"' in log
    finally:
        assert a.terminate() == 0, a.log()


def test_a_model_that_cannot_be_averaged_is_refused_with_the_setting(kafka_bootstrap: str, topic_prefix: str,
                                                                     tmp_path: Path) -> None:
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [f"{topic_prefix}-in"], partitions=1)
    svc = ServiceProcess(_config(tmp_path, kafka_bootstrap, topic_prefix, "t", model="HoeffdingTreeClassifier"),
                         tmp_path / "t.log")
    assert svc.proc.wait(120) == 2
    assert "sync.mode average: model HoeffdingTreeClassifier cannot be averaged" in svc.log(), svc.log()


def test_two_sites_in_their_own_groups_share_only_parameters_over_another_cluster_and_converge(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Sites: two consumer groups, each with its own input topic on its own cluster (here: the test broker),
    average over a sync topic on a second cluster (`sync.kafka`). Every round has one digest at both sites, both
    sites take part, and the second cluster holds the sync topic only: no event left its site."""
    from driftline.stream.broker import LocalKafkaBroker
    from driftline.stream.kafka.clients import make_admin

    shared = f"{topic_prefix}-federation"
    n_events = 9_000
    with LocalKafkaBroker() as federation:
        sites: dict[str, ServiceProcess] = {}
        streams: list[threading.Thread] = []
        try:
            for site, seed in (("east", 21), ("west", 22)):
                prefix = f"{topic_prefix}-{site}"
                ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [f"{prefix}-in"], partitions=2)
                cfg = write_config(
                    tmp_path / f"{site}.yaml", kafka_bootstrap, prefix, model={"name": "LogisticRegression",
                                                                               "classes": [False, True]},
                    topics={"audit": f"{prefix}-audit"}, kafka={"max_poll_records": 200},
                    checkpoint={"directory": str(tmp_path / site), "every_events": 5000, "every_seconds": 2.0},
                    sync={"mode": "average", "topic": shared, "every_seconds": 1.0, "every_events": 100_000,
                          "round_timeout_seconds": 3.0, "kafka": {"bootstrap_servers": federation.bootstrap_servers}})
                sites[site] = ServiceProcess(cfg, tmp_path / f"{site}.log")
                streams.append(threading.Thread(target=_stream, args=(kafka_bootstrap, f"{prefix}-in",
                                                                      _events(seed, n_events), 1_500.0)))
            for s in sites.values():
                s.wait_ready()
            for t in streams:
                t.start()
            for t in streams:
                t.join(120)
            for site in sites:
                prefix = f"{topic_prefix}-{site}"
                wait_for(lambda p=prefix: committed_offsets(kafka_bootstrap, f"{p}-group", f"{p}-in")
                         == end_offsets(kafka_bootstrap, f"{p}-in"), 120, f"site {site} to commit everything")
            time.sleep(3)  # a last round
            stats = {n: s.metrics() for n, s in sites.items()}
        finally:
            codes = {n: s.terminate() for n, s in sites.items()}
            assert all(c == 0 for c in codes.values()), "\n".join(s.log() for s in sites.values())
        admin = make_admin(KafkaSettings(bootstrap_servers=federation.bootstrap_servers))
        try:
            theirs = {t for t in admin.list_topics() if t.startswith(topic_prefix)}
        finally:
            admin.close()
    assert theirs == {shared}, theirs  # parameters crossed; events, predictions, audit stayed at their site
    digests: dict[int, set[str]] = collections.defaultdict(set)
    members: dict[int, set[str]] = collections.defaultdict(set)
    for site in sites:
        for r in read_topic(kafka_bootstrap, f"{topic_prefix}-{site}-audit", timeout=5):
            rec = json.loads(r.value)
            if rec.get("action") == "sync_round":
                digests[rec["round"]].add(rec["digest"])
                members[rec["round"]].update(rec["members"])
    assert len(digests) >= 5 and all(len(d) == 1 for d in digests.values()), digests
    assert sum(len(m) == 2 for m in members.values()) >= 4, members  # both sites in the rounds
    assert all(s["driftline_sync_diverged_rounds_total"] == 0 for s in stats.values())


def test_a_drift_adaptation_of_one_member_becomes_the_groups_model_every_member_computes_alike(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    """Group decisions on the real broker: members with ADWIN and the reset policy on an abrupt drift; each
    adaptation rides on its member's next update and the round takes the adapted model: counted at every
    member, audited in the round (adapted_by), and every round still has one digest."""
    topic, group = f"{topic_prefix}-in", f"{topic_prefix}-group"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [topic], partitions=4)
    n = 12_000
    events = list(itertools.islice(from_generator("SEA", params={"variant": 0}, seed=5, id_prefix="d-",
                                                  drift_at=n // 2, drift_params={"variant": 3}), n))
    drift = {"detectors": [{"name": "ADWIN"}], "policies": [{"name": "reset"}], "guard": {"window": 0}}
    members = {}
    for name in ("a", "b"):
        cfg = _config(tmp_path, kafka_bootstrap, topic_prefix, name)
        text = cfg.read_text() + yaml.safe_dump({"drift": drift})
        cfg.write_text(text)
        members[name] = ServiceProcess(cfg, tmp_path / f"{name}.log")
    producer = threading.Thread(target=_stream, args=(kafka_bootstrap, topic, events, 1_500.0))
    try:
        for m in members.values():
            m.wait_ready()
        producer.start()
        producer.join(120)
        wait_for(lambda: committed_offsets(kafka_bootstrap, group, topic) == end_offsets(kafka_bootstrap, topic),
                 120, "the group to consume and commit everything")
        time.sleep(3)
        stats = {name: m.metrics() for name, m in members.items()}
    finally:
        if producer.ident is not None:
            producer.join(120)
        codes = {name: m.terminate() for name, m in members.items()}
        assert all(c == 0 for c in codes.values()), "\n".join(m.log() for m in members.values())
    adaptations = sum(v for s in stats.values() for k, v in s.items()
                      if k.startswith("driftline_adaptations_total{") and 'action="reset"' in k)
    assert adaptations >= 1, "no member adapted to the drift"
    carried = {name: s["driftline_sync_group_adaptations_total"] for name, s in stats.items()}
    assert min(carried.values()) >= 1 and len(set(carried.values())) == 1, carried  # every member took them
    audit = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-audit", timeout=5)]
    rounds = [r for r in audit if r.get("action") == "sync_round"]
    assert any(r.get("adapted_by") for r in rounds)
    digests = _round_digests(kafka_bootstrap, f"{topic_prefix}-audit")
    assert all(len(d) == 1 for d in digests.values()), digests
