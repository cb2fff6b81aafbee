from __future__ import annotations

import math
import random

import pytest

from driftline.monitoring.prequential import ClassificationTracker, RegressionTracker


def test_classification_rolling_and_cumulative() -> None:
    t = ClassificationTracker(window=4)
    assert math.isnan(t.rolling_accuracy)
    for y, p in [(1, 1), (1, 0), (0, 0), (0, 0), (1, 0), (1, 0)]:
        t.update(y, p)
    assert t.cumulative_accuracy == pytest.approx(3 / 6)
    assert t.rolling_accuracy == pytest.approx(2 / 4)  # last four: ok ok no no


def test_no_prediction_and_type_mismatch_count_as_wrong() -> None:
    t = ClassificationTracker(window=10)
    t.update(1, None)
    t.update(1, True)  # True == 1 in Python, but it is a different label
    t.update("a", "a")
    assert t.correct == 1


def test_regression_matches_direct_computation() -> None:
    rng = random.Random(3)
    pairs = [(rng.uniform(-5, 5), rng.uniform(-5, 5)) for _ in range(500)]
    t = RegressionTracker(window=100)
    for y, p in pairs:
        t.update(y, p)
    errs = [y - p for y, p in pairs]
    assert t.cumulative_mae == pytest.approx(sum(map(abs, errs)) / 500)
    assert t.cumulative_rmse == pytest.approx(math.sqrt(sum(e * e for e in errs) / 500))
    last = errs[-100:]
    assert t.rolling_mae == pytest.approx(sum(map(abs, last)) / 100)
    assert t.rolling_rmse == pytest.approx(math.sqrt(sum(e * e for e in last) / 100))


@pytest.mark.parametrize("cls", [ClassificationTracker, RegressionTracker])
def test_state_round_trip(cls: type) -> None:
    a, b = cls(window=5), cls(window=5)
    for i in range(12):
        a.update(i % 3, (i * 7) % 3)
    b.load_state_dict(a.state_dict())
    a.update(1, 1)
    b.update(1, 1)
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("cls", [ClassificationTracker, RegressionTracker])
@pytest.mark.parametrize("chunks", [[3, 1, 7], [20], [2, 9, 0, 9]])
def test_update_many_is_update_for_each_in_order(cls: type, chunks: list[int]) -> None:
    """A batch at once (the quality observer's) leaves the tracker where one update per event does, whether a
    batch fits in the rolling window, overflows it, or replaces it whole."""
    rng = random.Random(7)
    pairs = [(rng.choice([True, False]), rng.choice([True, False, None, 1])) if cls is ClassificationTracker
             else (rng.uniform(-5, 5), rng.choice([rng.uniform(-5, 5), None])) for _ in range(sum(chunks))]
    one, many = cls(5), cls(5)
    for y, p in pairs:
        one.update(y, p)
    start = 0
    for k in chunks:
        many.update_many(pairs[start:start + k])
        start += k
    assert many.state_dict() == one.state_dict()
    assert (many.rolling, many.cumulative) == pytest.approx((one.rolling, one.cumulative))
