"""River's naive Bayes in sync.mode average (`learners.river_sync`): counts and Gaussians merge exactly, so the
group's model is the one a single instance learns from every member's events."""

from __future__ import annotations

import itertools

import pytest

from driftline.core import Event
from driftline.learners.base import Learner
from driftline.learners.capabilities import mergeable
from driftline.learners.factory import build_learner
from driftline.learners.mergeable import Params, contribution, merge, rebase
from driftline.settings import ModelSettings
from driftline.stream.sources import from_generator

GAUSSIAN = ModelSettings(name="GaussianNB", classes=[0, 1, 2], scale=False)
MULTINOMIAL = ModelSettings(name="naive_bayes.MultinomialNB", text_features={"kind": "BagOfWords"})
WORDS = ["goal", "match", "vote", "party", "chip", "code", "team", "law"]


def _numeric(n: int, seed: int) -> list[Event]:
    src = from_generator("Agrawal", params={"classification_function": 2}, seed=seed, id_prefix=f"{seed}-")
    out = []
    for i, e in enumerate(itertools.islice(src, n)):
        e = Event.model_validate(e)
        out.append(e.model_copy(update={"label": i % 3 if e.label else (i + 1) % 3}))
    return out


def _texts(n: int, seed: int) -> list[Event]:
    out = []
    for i in range(n):
        label = ("sport", "politics", "tech")[(i * 7 + seed) % 3]
        words = [WORDS[(i * k + seed + len(label)) % len(WORDS)] for k in range(1, 5)]
        out.append(Event(id=f"{seed}-{i}", text=" ".join(words), label=label))
    return out


def _params(learner: Learner) -> Params:
    m = mergeable(learner)
    assert m is not None
    return m.sync_params()


@pytest.mark.parametrize(("cfg", "events"), [(GAUSSIAN, _numeric), (MULTINOMIAL, _texts)],
                         ids=["GaussianNB", "MultinomialNB"])
def test_the_group_model_is_the_one_a_single_instance_learns_from_every_event(cfg: ModelSettings, events) -> None:  # type: ignore[no-untyped-def]
    shared, parts = events(200, 1), [events(n, seed) for n, seed in ((150, 2), (300, 3), (80, 4))]
    single = build_learner(cfg)
    for e in shared + [e for part in parts for e in part]:
        single.learn_one(e, e.label)  # type: ignore[arg-type]
    # three members start from the group's model (the shared events), each learns its own part
    start = build_learner(cfg)
    for e in shared:
        start.learn_one(e, e.label)  # type: ignore[arg-type]
    base = _params(start)
    members = []
    for part in parts:
        member = build_learner(cfg)
        m = mergeable(member)
        assert m is not None
        m.load_sync_params(base)
        for e in part:
            member.learn_one(e, e.label)  # type: ignore[arg-type]
        members.append(member)
    merged = merge(base, [(float(len(p)), contribution(_params(m), base)) for p, m in zip(parts, members, strict=True)])
    group = build_learner(cfg)
    g = mergeable(group)
    assert g is not None
    g.load_sync_params(merged)
    for e in events(100, 9):
        want, got = single.predict_one(e), group.predict_one(e)
        assert got.value == want.value
        assert dict(got.proba or {}) == pytest.approx(dict(want.proba or {}), rel=1e-9, abs=1e-12)
    # a member keeps what it learned after it sent, on top of the group's model
    extra = events(20, 11)
    now = members[0]
    sent = _params(now)
    for e in extra:
        now.learn_one(e, e.label)  # type: ignore[arg-type]
    m0 = mergeable(now)
    assert m0 is not None
    m0.load_sync_params(rebase(merged, _params(now), sent))
    for e in extra:
        single.learn_one(e, e.label)  # type: ignore[arg-type]
    for e in events(50, 12):
        assert dict(now.predict_one(e).proba or {}) == pytest.approx(dict(single.predict_one(e).proba or {}),
                                                                     rel=1e-9, abs=1e-12)
