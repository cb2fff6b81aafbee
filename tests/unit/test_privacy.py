"""sync.privacy: each member's update clipped and noised before it is sent, and the budget from Opacus's
accountant; the real `Syncer` over the in-memory sync topic of tests/unit/test_syncer.py."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from opacus.accountants.analysis import rdp
from prometheus_client import CollectorRegistry

from driftline.core import Event
from driftline.learners.capabilities import mergeable
from driftline.learners.factory import build_learner
from driftline.learners.mergeable import MEAN, Entry, contribution, decode, digest, mean_entry, moments_entry
from driftline.learners.privacy import ORDERS, epsilon, privatize
from driftline.monitoring.metrics import SyncMetrics
from driftline.settings import ModelSettings, Settings, SyncSettings
from driftline.stream.sources import from_generator
from driftline.stream.sync import Syncer, SyncState
from tests.unit.test_syncer import Log, Reader, Writer

CFG = ModelSettings(name="LogisticRegression", classes=[False, True], scale=False)


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_an_update_is_clipped_to_the_bound_and_a_small_one_is_left_as_it_is() -> None:
    ref = {"w": mean_entry({"a": 1.0, "b": 1.0}), "i": mean_entry({"": 0.5})}
    big = {"w": mean_entry({"a": 4.0, "b": 5.0, "c": 0.0}), "i": mean_entry({"": 0.5})}  # change (3, 4, 0): norm 5
    out, norm = privatize(big, ref, clip=1.0, noise_multiplier=1e-12, rng=_rng())
    assert norm == pytest.approx(5.0)
    assert out["w"].as_dict() == pytest.approx({"a": 1.6, "b": 1.8, "c": 0.0})  # ref + (3, 4, 0) / 5
    small = {"w": mean_entry({"a": 1.3, "b": 1.0}), "i": mean_entry({"": 0.4})}
    out, norm = privatize(small, ref, clip=1.0, noise_multiplier=1e-12, rng=_rng())
    assert norm == pytest.approx(np.hypot(0.3, 0.1))
    assert out["w"].as_dict() == pytest.approx({"a": 1.3, "b": 1.0}) and out["i"].as_dict() == pytest.approx({"": 0.4})


def test_the_noise_has_the_configured_scale() -> None:
    keys = {f"f{i}": 0.0 for i in range(20_000)}
    ref = {"w": mean_entry(keys)}
    out, _ = privatize({"w": mean_entry(keys)}, ref, clip=0.5, noise_multiplier=2.0, rng=_rng())
    noise = out["w"].values
    assert float(noise.std()) == pytest.approx(1.0, rel=0.03)  # noise_multiplier * clip
    assert abs(float(noise.mean())) < 0.03


def test_statistics_of_the_data_cannot_be_privatised() -> None:
    update = {"scaler": moments_entry({"a": (10.0, 1.0, 0.5)})}
    with pytest.raises(ValueError, match="statistics of the member's data"):
        privatize(update, {}, clip=1.0, noise_multiplier=1.0, rng=_rng())
    with pytest.raises(ValueError, match=r"sync\.privacy with model\.scale"):
        Settings(sync={"mode": "average", "privacy": {"clip": 1.0}})
    for name in ("GaussianNB", "naive_bayes.MultinomialNB"):  # counts of the member's events
        with pytest.raises(ValueError, match=rf"sync\.privacy with model {name}: its counts"):
            Settings(model={"name": name, "scale": False}, sync={"mode": "average", "privacy": {"clip": 1.0}})
    with pytest.raises(ValueError, match=r"sync\.privacy is for sync\.mode average"):
        SyncSettings(mode="ensemble", key="k" * 16, privacy={"clip": 1.0})


def test_epsilon_is_opacus_rdp_accountant() -> None:
    assert epsilon(0, 1.0, 1e-5) == 0.0
    for rounds, sigma in ((1, 4.0), (25, 4.0), (25, 1.0)):
        spent = rdp.compute_rdp(q=1.0, noise_multiplier=sigma, steps=rounds, orders=list(ORDERS))
        expected, _ = rdp.get_privacy_spent(orders=list(ORDERS), rdp=spent, delta=1e-6)
        assert epsilon(rounds, sigma, 1e-6) == pytest.approx(expected)
    assert epsilon(25, 4.0, 1e-6) > epsilon(1, 4.0, 1e-6) > 0  # more rounds spend more


def test_members_send_noisy_equal_weight_updates_merge_alike_and_report_the_budget() -> None:
    log = Log()
    privacy = {"clip": 0.5, "noise_multiplier": 0.8, "delta": 1e-5}
    members: list[Syncer] = []
    for i, name in enumerate(("a", "b")):
        learner = build_learner(CFG)
        model = mergeable(learner)
        assert model is not None
        cfg = SyncSettings(mode="average", every_seconds=1e9, every_events=10**9,
                           privacy={**privacy, "seed": i})
        members.append(Syncer(cfg, learner, model, SyncState(), topic="sync", group="g", member=name,
                              writer=Writer(log), reader=Reader(log), metrics=SyncMetrics(CollectorRegistry())))
    gen = from_generator("Hyperplane", params={"n_features": 100}, seed=3, id_prefix="h")
    events = [Event.model_validate(e) for e in itertools.islice(gen, 2400)]
    for m in members:
        m.join()
    deviations: list[np.ndarray] = []
    for r in range(1, 5):
        for i, m in enumerate(members):
            for e in events[(2 * (r - 1) + i) * 300:(2 * (r - 1) + i + 1) * 300]:
                assert e.label is not None
                m.learner.learn_one(e, e.label)
            m.prepare()
            st = m.state
            assert st.pub is not None
            true = contribution(st.pub, st.ref or {})
            ref = st.ref or {}
            assert m.send_update()
            header, sent = decode(log.records[-1].value or b"")
            assert header["weight"] == 1.0 and sent is not None  # equal weights: the count is not sent
            # what was sent = ref + clip(true change) + noise: the noise, recomputed here
            change = {n: true[n].values - _on(ref, n, true[n]) for n in true}
            norm = float(np.sqrt(sum(float(v @ v) for v in change.values())))
            scale = min(1.0, privacy["clip"] / norm)
            deviations += [sent[n].values - _on(ref, n, true[n]) - change[n] * scale for n in true]
        for m in members:
            m.poll()
        assert len({digest(m.model.sync_params()) for m in members}) == 1, f"round {r}: members differ"
    noise = np.concatenate(deviations)
    assert float(noise.std()) == pytest.approx(privacy["clip"] * privacy["noise_multiplier"], rel=0.1)
    for m in members:
        assert m.state.private_rounds == 4
        assert m.metrics.epsilon._value.get() == pytest.approx(epsilon(4, privacy["noise_multiplier"], 1e-5))


def _on(ref: dict[str, Entry], name: str, like: Entry) -> np.ndarray:
    """``ref``'s values of ``name`` on the keys of ``like`` (0 where it has none)."""
    base = ref.get(name)
    if base is None:
        return np.zeros_like(like.values)
    values = dict(zip(base.keys, base.values, strict=True))
    assert like.kind == MEAN
    return np.array([values.get(k, 0.0) for k in like.keys])


def test_a_member_that_learned_nothing_sends_no_private_update() -> None:
    """Every private update spends privacy budget: an idle member (a quiet stream, no partitions) sends none."""
    log = Log()
    learner = build_learner(CFG)
    model = mergeable(learner)
    assert model is not None
    cfg = SyncSettings(mode="average", every_seconds=0.001, every_events=10**9,
                       privacy={"clip": 0.5, "noise_multiplier": 1.0, "seed": 1})
    syncer = Syncer(cfg, learner, model, SyncState(), topic="sync", group="g", member="a", writer=Writer(log),
                    reader=Reader(log), metrics=SyncMetrics(CollectorRegistry()))
    syncer.join()
    time.sleep(0.01)
    assert not syncer.due()
    e = next(Event.model_validate(x) for x in from_generator("Hyperplane", params={"n_features": 100}, seed=3,
                                                           id_prefix="h"))
    assert e.label is not None
    learner.learn_one(e, e.label)
    assert syncer.due()
