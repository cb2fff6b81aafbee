"""The promotion test (`adapters.promotion.Race`): false promotions between equal models stay at or below
alpha per window, a clearly better challenger wins within a window, and the guards (min_events, cooldown,
min_gain, Bonferroni over challengers) hold."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.adapters.promotion import MANUAL, MCNEMAR, PAIRED_T, Promotion, PromotionSettings, Race


def _settings(**kw: Any) -> PromotionSettings:
    return PromotionSettings(**{"schedule": "window", "min_events": 0, "cooldown": 0, **kw})


def _bernoulli_race(race: Race, accuracy: dict[str, float], n: int, rng: np.random.Generator) -> list[Promotion]:
    """Feed ``n`` labeled events where each model is right with its own probability, independently."""
    names = list(accuracy)
    wrong = rng.random((n, len(names))) >= np.array([accuracy[k] for k in names])
    found = []
    for row in wrong:
        p = race.update({k: float(w) for k, w in zip(names, row, strict=True)})
        if p is not None:
            found.append(p)
    return found


@pytest.mark.parametrize("schedule", ["window", "sequential"])
def test_false_promotions_between_equally_accurate_models_are_at_most_alpha_per_window(schedule: str) -> None:
    alpha, window, runs, windows = 0.05, 200, 60, 20
    promotions = 0
    rng = np.random.default_rng(7)
    for _ in range(runs):
        race = Race(["a", "b"], "classification", _settings(schedule=schedule, alpha=alpha, window=window), "a")
        promotions += len(_bernoulli_race(race, {"a": 0.8, "b": 0.8}, window * windows, rng))
    rate = promotions / (runs * windows)
    assert rate <= alpha, f"{promotions} false promotions in {runs * windows} windows: {rate:.4f} > {alpha}"
    # the test is not vacuous: at alpha 0.5-ish it does promote equal models now and then
    lax = Race(["a", "b"], "classification", _settings(schedule=schedule, alpha=0.45, window=window), "a")
    assert _bernoulli_race(lax, {"a": 0.8, "b": 0.8}, window * 40, np.random.default_rng(8))


def test_false_promotions_of_regression_models_with_equal_mae_are_at_most_alpha_per_window() -> None:
    alpha, window, runs, windows = 0.05, 200, 40, 20
    rng = np.random.default_rng(11)
    promotions = 0
    for _ in range(runs):
        race = Race(["a", "b"], "regression", _settings(alpha=alpha, window=window), "a")
        errors = np.abs(rng.normal(0.0, 1.0, size=(window * windows, 2)))
        for ea, eb in errors:
            promotions += race.update({"a": float(ea), "b": float(eb)}) is not None
    assert promotions / (runs * windows) <= alpha


@pytest.mark.parametrize("schedule", ["window", "sequential"])
def test_a_clearly_better_challenger_is_promoted_within_the_window(schedule: str) -> None:
    window = 500
    race = Race(["weak", "strong"], "classification", _settings(schedule=schedule, window=window), "weak")
    found = _bernoulli_race(race, {"weak": 0.7, "strong": 0.9}, window, np.random.default_rng(3))
    assert [p.champion for p in found] == ["strong"] and race.champion == "strong"
    p = found[0]
    assert p.previous == "weak" and p.reason == "test" and p.p_value is not None and p.p_value <= 0.01
    assert p.loss_previous is not None and p.loss_champion is not None and p.loss_champion < p.loss_previous
    if schedule == "window":
        assert (p.labeled, p.window, p.test) == (window, window, MCNEMAR)
    else:  # repeated looks: evidence this strong is enough long before the window ends
        assert p.labeled < window / 2, p


def test_a_better_regression_model_is_promoted_by_the_paired_t_test() -> None:
    rng = np.random.default_rng(5)
    race = Race(["rough", "fine"], "regression", _settings(window=300), "rough")
    found = []
    for _ in range(300):
        res = race.update({"rough": abs(float(rng.normal(0, 1.0))), "fine": abs(float(rng.normal(0, 0.6)))})
        if res is not None:
            found.append(res)
    assert [(p.champion, p.test) for p in found] == [("fine", PAIRED_T)]


def test_min_events_cooldown_and_min_gain_hold_back_a_better_challenger() -> None:
    rng = np.random.default_rng(1)
    late = Race(["a", "b"], "classification", _settings(window=200, min_events=1000), "a")
    found = _bernoulli_race(late, {"a": 0.6, "b": 0.95}, 1200, rng)
    assert found[0].labeled == 1000  # the first window end at or after min_events
    # after that change, the old champion is better again but must wait out the cooldown
    cool = Race(["a", "b"], "classification", _settings(window=200, cooldown=1000), "a")
    first = _bernoulli_race(cool, {"a": 0.6, "b": 0.95}, 200, rng)
    assert [p.labeled for p in first] == [200]
    back = _bernoulli_race(cool, {"a": 0.95, "b": 0.6}, 1200, rng)
    assert [p.labeled for p in back] == [1200] and cool.champion == "a"
    # a significant gain below min_gain does not promote
    small = Race(["a", "b"], "classification", _settings(window=5000, min_gain=0.05), "a")
    assert not _bernoulli_race(small, {"a": 0.80, "b": 0.83}, 5000, rng)
    assert small.tests == 1


def test_each_of_several_challengers_is_tested_at_alpha_over_k_and_the_best_wins() -> None:
    race = Race(["champ", "good", "better", "same"], "classification", _settings(window=1000, alpha=0.03), "champ")
    found = _bernoulli_race(race, {"champ": 0.7, "good": 0.78, "better": 0.9, "same": 0.7}, 1000,
                            np.random.default_rng(2))
    assert [p.champion for p in found] == ["better"]
    assert found[0].alpha == pytest.approx(0.01)


def test_manual_promotion_state_round_trip_and_unknown_names() -> None:
    race = Race(["a", "b", "c"], "classification", _settings(), "a")
    done = race.promote("c")
    assert (done.previous, done.champion, done.reason, race.champion) == ("a", "c", MANUAL, "c")
    with pytest.raises(KeyError, match="no model named 'z'; the models are a, b, c"):
        race.promote("z")
    again = Race(["a", "b", "c"], "classification", _settings(), "a")
    again.load_state_dict(race.state_dict())
    assert again.champion == "c" and again.promotions == 1
    renamed = Race(["a", "b"], "classification", _settings(), "a")
    renamed.load_state_dict(race.state_dict())  # "c" is gone from the config: the configured champion serves
    assert renamed.champion == "a"


def test_a_model_without_a_prediction_is_left_out_of_the_pairs() -> None:
    race = Race(["a", "b"], "classification", _settings(window=20), "a")
    for _ in range(20):
        assert race.update({"a": 1.0, "b": None}) is None
    assert race.labeled == 20 and race.champion == "a"
    for _ in range(20):
        race.update({"a": None, "b": 0.0})
    assert race.labeled == 20  # without the champion's prediction there is nothing to compare


def test_auto_is_sequential_for_classification_and_window_for_regression() -> None:
    auto = PromotionSettings()
    assert Race(["a", "b"], "classification", auto, "a").schedule == "sequential"
    assert Race(["a", "b"], "regression", auto, "a").schedule == "window"


def test_invalid_races_are_refused() -> None:
    with pytest.raises(ValueError, match="two or more distinct"):
        Race(["a"], "classification", _settings(), "a")
    with pytest.raises(ValueError, match="'sequential' is for classification"):
        Race(["a", "b"], "regression", _settings(schedule="sequential"), "a")
    with pytest.raises(ValueError, match="min_gain"):
        PromotionSettings(min_gain=1.5)
