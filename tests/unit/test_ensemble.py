"""``sync.mode: ensemble``: the signed snapshot format, the vote, the serving learner, and the member's side
(`stream.snapshots.SnapshotSync`) over an in-memory log with the sync topic's semantics. The real broker runs
the same code in tests/integration/test_ensemble.py."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from driftline.core import Event, Prediction
from driftline.errors import ConfigError
from driftline.learners.ensemble import GroupEnsemble, Score, model_kind, vote
from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import SyncMetrics
from driftline.settings import ModelSettings, Settings, SyncSettings
from driftline.stream.snapshots import MAGIC, SnapshotRefused, SnapshotSync, seal, unseal
from driftline.stream.sources import from_generator
from tests.unit.test_syncer import Log, Reader, Writer

TREE = ModelSettings(name="tree.HoeffdingTreeClassifier", params={"grace_period": 50}, classes=[False, True])
KEY = "0123456789abcdef-a-test-key"


def _events(n: int, seed: int, variant: int = 0) -> list[Event]:
    gen = from_generator("SEA", params={"variant": variant}, seed=seed, id_prefix=f"s{seed}-")
    return [Event.model_validate(e) for e in itertools.islice(gen, n)]


def _member(log: Log, name: str, *, key: str = KEY, cfg: ModelSettings = TREE, **sync: Any
            ) -> tuple[SnapshotSync, GroupEnsemble, SyncMetrics]:
    ensemble = GroupEnsemble(build_learner(cfg), name)
    metrics = SyncMetrics(CollectorRegistry())
    settings = SyncSettings(mode="ensemble", key=key, every_seconds=1e9, every_events=10**9, **sync)
    member = SnapshotSync(settings, ensemble, key, topic="sync", group="g", kind=model_kind(ensemble.own),
                          writer=Writer(log), reader=Reader(log), metrics=metrics)
    return member, ensemble, metrics


def _learn(ensemble: GroupEnsemble, events: Sequence[Event]) -> None:
    for e in events:
        assert e.label is not None
        ensemble.predict_one(e)
        ensemble.learn_one(e, e.label)


def _refused(metrics: SyncMetrics, reason: str) -> float:
    return metrics.refused.labels(reason)._value.get()


# -- the signed format ------------------------------------------------------------------------------------------
def test_a_sealed_snapshot_opens_with_its_key_and_nothing_else_does() -> None:
    header, body = {"format": 1, "member": "a"}, b"\x00model bytes"
    blob = seal(b"k" * 16, header, body)
    assert blob.startswith(MAGIC) and unseal(b"k" * 16, blob) == (header, body)
    cases: list[tuple[bytes | None, bytes, str]] = [
        (blob, b"another key!!!!!", "signature"),
        (blob[:-1] + bytes([blob[-1] ^ 1]), b"k" * 16, "signature"),  # one bit of the model changed
        (blob[:len(MAGIC) + 40] + b"X" + blob[len(MAGIC) + 41:], b"k" * 16, "signature"),  # the header changed
        (b'{"type": "update"}', b"k" * 16, "unsigned"),
        (None, b"k" * 16, "unsigned"),
        (seal(b"k" * 16, {"format": 2}, b""), b"k" * 16, "format"),
    ]
    for value, key, reason in cases:
        with pytest.raises(SnapshotRefused) as info:
            unseal(key, value)
        assert info.value.reason == reason


# -- the vote ---------------------------------------------------------------------------------------------------
def test_the_vote_weighs_each_member_by_its_rolling_quality() -> None:
    a = Prediction(True, {True: 0.9, False: 0.1})
    b = Prediction(False, {True: 0.2, False: 0.8})
    # b is right more often: its vote wins
    out = vote("classification", [(a, Score(0.6, 100)), (b, Score(0.9, 100))])
    assert out.value is False and out.proba == pytest.approx({True: (0.6 * 0.9 + 0.9 * 0.2) / 1.5,
                                                               False: (0.6 * 0.1 + 0.9 * 0.8) / 1.5})
    # a member not scored yet weighs nothing while another has been; members that predict nothing are left out
    assert vote("classification", [(a, Score(0.0, 0)), (b, Score(0.5, 10)), (Prediction(None, {}), Score(1, 9))]
                ).value is False
    # nobody scored: equal weights; a member that only votes counts as probability 1
    assert vote("classification", [(Prediction(True), Score()), (b, Score())]).proba == pytest.approx(
        {True: 0.6, False: 0.4})
    # regression: weights 1 / MAE
    assert vote("regression", [(Prediction(10.0), Score(1.0, 5)), (Prediction(20.0), Score(3.0, 5))]
                ).value == pytest.approx((10 * 1 + 20 / 3) / (1 + 1 / 3))
    assert vote("regression", [(Prediction(None), Score(1.0, 5))]).value is None


def test_the_serving_learner_learns_with_its_own_model_and_scores_it() -> None:
    ensemble = GroupEnsemble(build_learner(TREE), "a")
    events = _events(400, seed=1)
    _learn(ensemble, events)
    assert ensemble.updates == 400 and ensemble.own.updates == 400
    score = ensemble.own_score.score()
    assert score.n == 399 and 0.6 < score.value <= 1.0  # the first prediction (nothing learned) is none
    # without peers it serves its own model's prediction
    e = _events(1, seed=9)[0]
    assert ensemble.predict_one(e) == ensemble.own.predict_one(e)


# -- members over the sync topic --------------------------------------------------------------------------------
def test_a_member_serves_the_vote_of_its_model_and_the_others_snapshots() -> None:
    log = Log()
    a, ea, _ = _member(log, "a")
    b, eb, mb = _member(log, "b")
    a.join()
    b.join()
    # a learns one concept (SEA variant 0), b another (variant 3): each alone predicts its own
    _learn(ea, _events(1500, seed=1, variant=0))
    _learn(eb, _events(1500, seed=2, variant=3))
    assert a.due() is False  # every_events / every_seconds not reached
    a.prepare()
    assert a.send_update() is True
    b.poll()
    assert set(eb.peers) == {"a"} and eb.peers["a"].updates == 1500
    assert mb.members._value.get() == 2 and mb.bytes.labels("received")._value.get() > 0
    probe = _events(300, seed=7, variant=0)
    served = [eb.predict_one(e) for e in probe]
    own = [eb.own.predict_one(e) for e in probe]
    peer = [eb.peers["a"].learner.predict_one(e) for e in probe]
    assert served != own  # a's snapshot takes part
    for s, o, p in zip(served, own, peer, strict=True):  # ... as the vote of the two
        expected = vote("classification", sorted([(o, eb.own_score.score()), (p, eb.peers["a"].score)],
                                                 key=lambda v: v is not (o, eb.own_score.score())))
        assert s.proba == pytest.approx(expected.proba)
    # the snapshot is a copy: a's later learning is not in b's vote until a sends again
    before = eb.peers["a"].learner.predict_one(probe[0])
    _learn(ea, _events(500, seed=3, variant=3))
    assert eb.peers["a"].learner.predict_one(probe[0]) == before
    # a leaves gracefully: its snapshot leaves b's vote
    a.leave()
    b.poll()
    assert eb.peers == {} and mb.members._value.get() == 1


def test_a_member_that_starts_serves_the_group_vote_from_its_first_prediction() -> None:
    log = Log()
    a, ea, _ = _member(log, "a")
    a.join()
    _learn(ea, _events(1000, seed=1))
    a.send_update()
    _learn(ea, _events(200, seed=2))
    a.send_update()  # a newer snapshot: the joiner loads only this one
    c, ec, mc = _member(log, "c")
    c.join()
    assert set(ec.peers) == {"a"} and ec.peers["a"].updates == 1200
    assert mc.merge_seconds._sum.get() > 0 and sum(b.get() for b in mc.merge_seconds._buckets) == 1  # one loaded
    e = _events(1, seed=5)[0]
    assert ec.own.predict_one(e).value is None  # its own model knows nothing yet...
    assert ec.predict_one(e).value is not None  # ... and it serves the group's vote


def test_tampered_unsigned_and_foreign_key_snapshots_are_refused_and_counted() -> None:
    log = Log()
    a, ea, _ = _member(log, "a")
    b, eb, mb = _member(log, "b")
    a.join()
    b.join()
    _learn(ea, _events(300, seed=1))
    a.send_update()
    good = log.records[-1]
    assert good.value is not None
    w = Writer(log)
    w.send("sync", b"a", good.value[:-10] + bytes(10))  # tampered model bytes
    w.send("sync", b"x", b"\x80\x04pickled-os.system")  # unsigned
    evil, evil_ensemble, _ = _member(log, "evil", key="another-key-of-16+chars")
    _learn(evil_ensemble, _events(100, seed=4))
    evil.send_update()  # signed with another key
    b.poll()
    assert (_refused(mb, "signature"), _refused(mb, "unsigned")) == (2, 1)
    assert set(eb.peers) == {"a"} and eb.peers["a"].updates == 300  # the good snapshot only


def test_another_model_kind_stops_a_member_at_start_and_is_refused_while_it_runs() -> None:
    log = Log()
    nb, enb, _ = _member(log, "nb", cfg=ModelSettings(name="GaussianNB"))
    nb.join()
    _learn(enb, _events(100, seed=1))
    nb.send_update()
    tree, _, _ = _member(log, "tree")
    with pytest.raises(ConfigError, match=r"holds the snapshot of member 'nb'.*GaussianNB.*another sync.topic"):
        tree.join()
    log2 = Log()
    t2, et2, mt2 = _member(log2, "tree")
    t2.join()
    n2, en2, _ = _member(log2, "nb", cfg=ModelSettings(name="GaussianNB"))
    _learn(en2, _events(100, seed=1))
    n2.send_update()
    t2.poll()
    assert _refused(mt2, "model_kind") == 1 and et2.peers == {}


def test_a_silent_member_leaves_the_vote_after_max_snapshot_age() -> None:
    log = Log()
    a, ea, _ = _member(log, "a")
    b, eb, mb = _member(log, "b", max_snapshot_age_seconds=0.2)
    a.join()
    b.join()
    _learn(ea, _events(100, seed=1))
    a.send_update()
    b.poll()
    assert set(eb.peers) == {"a"}
    time.sleep(0.3)
    b.poll()
    assert eb.peers == {} and mb.members._value.get() == 1


def test_a_snapshot_over_the_bound_is_not_sent_and_is_counted() -> None:
    log = Log()
    a, ea, ma = _member(log, "a", max_snapshot_bytes=10_000)
    a.join()
    _learn(ea, _events(3000, seed=1))
    assert a.send_update() is False
    assert log.records == [] and ma.updates.labels("too_large")._value.get() == 1
    assert a.labels_since() == 0  # not tried again at every batch


def test_settings_require_a_key_and_refuse_what_the_ensemble_cannot_do(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match=r"sync: key \(or key_file\) is required"):
        SyncSettings(mode="ensemble")
    with pytest.raises(ValueError, match=r"sync\.mode ensemble with drift\.policies: not built yet"):
        Settings(sync={"mode": "ensemble", "key": KEY}, drift={"detectors": [{"name": "ADWIN"}],
                                                               "policies": [{"name": "reset"}]})
    short = SyncSettings(mode="ensemble", key="short")
    with pytest.raises(ConfigError, match=r"sync\.key: 5 characters"):
        SnapshotSync(short, GroupEnsemble(build_learner(TREE), "a"), "short", topic="t", group="g", kind="k",
                     writer=Writer(Log()), reader=Reader(Log()), metrics=SyncMetrics(CollectorRegistry()))
    secret = tmp_path / "key"
    secret.write_text(KEY + "\n")
    assert SyncSettings(mode="ensemble", key_file=str(secret)).key_file == str(secret)
