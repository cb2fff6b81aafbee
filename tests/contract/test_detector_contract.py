"""Every drift detector through the same checks: fires on a seeded abrupt rise of the error rate within
a stated bound, stays silent on a seeded stationary stream, and its state round-trips.

Parameters are River's defaults except where noted; measured over 5 seeds x 20,000 stationary events
(error rate 0.1): ADWIN, KSWIN, HDDM_A, HDDM_W, FHDDM 0 false alarms; PageHinkley 2 (0 with
threshold 80); DDM 3 (0 with drift_threshold 3.5); EDDM 99 with defaults, 11 with alpha 0.85/beta 0.8:
EDDM targets gradual drift and alarms on a low, stationary error rate.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from driftline.adapters.detectors import DETECTORS, DRIFT, DriftMonitor
from driftline.errors import ConfigError

PARAMS: dict[str, dict[str, Any]] = {name: {} for name in DETECTORS}
PARAMS["PageHinkley"] = {"threshold": 80}
PARAMS["DDM"] = {"drift_threshold": 3.5}
PARAMS["EDDM"] = {"alpha": 0.85, "beta": 0.8}
BOUND = 250  # events after the change; measured worst case over 5 seeds: 220 (PageHinkley, threshold 80)


def _errors(n: int, p: float, rng: random.Random) -> list[bool]:
    return [rng.random() < p for _ in range(n)]


def _feed(m: DriftMonitor, errors: list[bool]) -> list[int]:
    """Indices where a drift was signalled."""
    out = []
    for i, wrong in enumerate(errors):
        if any(d.level == DRIFT for d in m.update(1, 0 if wrong else 1)):
            out.append(i)
    return out


@pytest.fixture(params=sorted(DETECTORS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param  # type: ignore[no-any-return]


def test_fires_on_an_abrupt_rise_of_the_error_rate(name: str) -> None:
    rng = random.Random(101)
    hits = _feed(DriftMonitor([(name, PARAMS[name])], task="classification", seed=1),
                 _errors(2000, 0.1, rng) + _errors(2000, 0.5, rng))
    after = [i - 2000 for i in hits if i >= 2000]
    assert after and after[0] <= BOUND, (name, hits[:5])


def test_silent_on_a_stationary_stream(name: str) -> None:
    hits = _feed(DriftMonitor([(name, PARAMS[name])], task="classification", seed=1),
                 _errors(10_000, 0.1, random.Random(1)))
    assert hits == [], name


def test_state_round_trip_continues_identically(name: str) -> None:
    rng = random.Random(7)
    errors = _errors(1500, 0.1, rng) + _errors(1500, 0.5, rng)
    a = DriftMonitor([(name, PARAMS[name])], task="classification", seed=1)
    _feed(a, errors[:1800])
    b = DriftMonitor([(name, PARAMS[name])], task="classification", seed=1)
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    assert _feed(a, errors[1800:]) == _feed(b, errors[1800:])


def test_config_errors_name_the_detector_and_parameter() -> None:
    with pytest.raises(ConfigError, match="unknown detector 'ADWINN'"):
        DriftMonitor([("ADWINN", {})], task="classification")
    with pytest.raises(ConfigError, match=r"drift.detectors.ADWIN.params: ADWIN has no parameter\(s\) \[.deltaa.\]"):
        DriftMonitor([("ADWIN", {"deltaa": 0.1})], task="classification")
    with pytest.raises(ConfigError, match="DDM watches 0/1 errors"):
        DriftMonitor([("DDM", {})], task="regression")
    with pytest.raises(ValueError, match="the state has detectors"):
        DriftMonitor([("ADWIN", {})], task="classification").load_state_dict(
            DriftMonitor([("KSWIN", {})], task="classification").state_dict())


def test_regression_errors_feed_real_valued_detectors() -> None:
    m = DriftMonitor([("ADWIN", {}), ("PageHinkley", {})], task="regression")
    rng = random.Random(3)
    fired = []
    for i in range(4000):
        y = rng.gauss(0, 1)
        pred = y + rng.gauss(0, 0.1 if i < 2000 else 2.0)
        fired += [(i, d.detector) for d in m.update(y, pred) if d.level == DRIFT]
    assert {d for i, d in fired if i >= 2000} == {"ADWIN", "PageHinkley"}
    assert not [i for i, _ in fired if i < 2000]


def test_a_state_saved_before_the_error_history_was_kept_still_loads() -> None:
    a = DriftMonitor([("ADWIN", {})], task="classification", seed=1)
    _feed(a, _errors(500, 0.1, random.Random(3)))
    state = a.state_dict()
    old = [entry[:5] for entry in pickle.loads(state["watches"])]  # (key, detector, sum, n, warned)
    b = DriftMonitor([("ADWIN", {})], task="classification", seed=1)
    b.load_state_dict({**state, "watches": pickle.dumps(old)})
    more = _errors(1500, 0.5, random.Random(4))
    assert _feed(b, more) == _feed(a, more)
