"""Champion and challengers: which of several models serves, decided by paired tests on the labeled stream.

Every model predicts every event before its label is known; when the label is learned each model has a
loss for it (classification: 0 right, 1 wrong; regression: the absolute error). The `Race` pairs each
challenger's loss with the champion's on the same events and promotes a challenger when, over a window of
labeled events, it is better by a one-sided paired test at significance ``alpha`` and by at least
``min_gain``, after ``min_events`` labeled events and not within ``cooldown`` of the previous change.

Two schedules (``auto``, the default: sequential for classification, window for regression), each with a
false-promotion rate of at most ``alpha`` per window of ``window`` labeled events
between two models of equal accuracy (Bonferroni over the challengers: each is tested at alpha / k):

- ``window``: one test at the end of each non-overlapping window. Classification: McNemar's exact test (a
  binomial test on the discordant pairs, the events exactly one of the two got right); regression: a paired
  t-test on the absolute errors (its null is equal mean absolute error).
- ``sequential`` (classification): a test built for repeated looks, checked after every labeled event and
  restarted with each window: a betting e-process on the discordant pairs, a nonnegative supermartingale
  when the challenger is not better, so that by Ville's inequality it crosses 1/alpha with probability at
  most alpha however often it is looked at. It promotes as soon as the evidence is there (a clearly better
  challenger wins within a fraction of a window).

After a change every pair starts again. ``min_gain`` is in accuracy points for classification (challenger's
minus champion's accuracy over the window) and a relative reduction of the mean absolute error for regression.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, model_validator
from scipy import stats  # type: ignore[import-untyped]

from driftline.config_base import Frozen
from driftline.core import Task

WINDOW = "window"
SEQUENTIAL = "sequential"
MANUAL = "manual"
TEST = "test"

MCNEMAR = "mcnemar_exact"
PAIRED_T = "paired_t"
BETTING = "sequential_sign_betting"


class PromotionSettings(Frozen):
    """When a challenger replaces the champion (with more than one model in ``models``)."""

    # auto: sequential for classification, window for regression
    schedule: Literal["auto", "window", "sequential"] = "auto"
    window: int = Field(1000, ge=20, le=10_000_000)  # labeled events per test window
    alpha: float = Field(0.01, gt=0, lt=0.5)  # significance over all challengers (Bonferroni)
    min_gain: float = Field(0.0, ge=0)  # accuracy points (classification) or relative MAE reduction (regression)
    min_events: int = Field(100, ge=0)  # labeled events the race has seen before any promotion
    cooldown: int = Field(500, ge=0)  # labeled events after a change before the next one

    def resolved(self, task: Task) -> str:
        """The schedule in effect for ``task`` (auto: sequential for classification, window for regression)."""
        if self.schedule != "auto":
            return self.schedule
        return SEQUENTIAL if task == "classification" else WINDOW

    @model_validator(mode="after")
    def _bounded(self) -> PromotionSettings:
        if self.min_gain >= 1:
            raise ValueError(f"min_gain {self.min_gain} is a fraction (accuracy points or relative MAE reduction) "
                             "and must be below 1")
        return self


@dataclass(frozen=True, slots=True)
class Promotion:
    """A change of champion, with the evidence for it (what the audit record says)."""

    previous: str
    champion: str
    labeled: int  # the race's labeled-event count at the change
    reason: str  # test | manual
    test: str | None = None
    window: int = 0  # paired labeled events the test saw
    loss_previous: float | None = None  # error rate (classification) or MAE over those events
    loss_champion: float | None = None
    statistic: float | None = None
    p_value: float | None = None
    alpha: float | None = None

    def record(self) -> dict[str, Any]:
        """The audit record's fields."""
        return {"type": "promotion", "from": self.previous, "to": self.champion, "reason": self.reason,
                "labeled": self.labeled, "test": self.test, "window": self.window,
                "error_from": self.loss_previous, "error_to": self.loss_champion, "statistic": self.statistic,
                "p_value": self.p_value, "alpha": self.alpha}


@dataclass
class _Pair:
    """One challenger against the champion over the current window."""

    n: int = 0  # events both scored
    wins: int = 0  # challenger better (classification: it alone was right)
    losses: int = 0  # champion better
    loss_champion: float = 0.0
    loss_challenger: float = 0.0
    diffs: list[float] = field(default_factory=list)  # regression: champion's minus challenger's abs error
    log_e: float = 0.0  # sequential: log of the e-process

    def add(self, champion: float, challenger: float, regression: bool, sequential: bool) -> None:
        self.n += 1
        self.loss_champion += champion
        self.loss_challenger += challenger
        d = champion - challenger
        if regression:
            self.diffs.append(d)
            return
        if d == 0:
            return
        if sequential:  # bet on "challenger better" with a stake learned from the earlier discordant pairs only
            p_hat = (self.wins + 1) / (self.wins + self.losses + 2)
            stake = min(max(2 * p_hat - 1, 0.0), 0.5)
            self.log_e += math.log1p(stake if d > 0 else -stake)
        if d > 0:
            self.wins += 1
        else:
            self.losses += 1

    def gain(self, regression: bool) -> float:
        if self.n == 0:
            return 0.0
        if regression:
            return (self.loss_champion - self.loss_challenger) / self.loss_champion if self.loss_champion > 0 else 0.0
        return (self.wins - self.losses) / self.n


class Race:
    """The champion among ``names`` and the paired statistics that may change it (`update` per labeled event)."""

    def __init__(self, names: Sequence[str], task: Task, cfg: PromotionSettings, champion: str) -> None:
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(f"a race needs two or more distinct models, got {list(names)}")
        if champion not in names:
            raise ValueError(f"champion {champion!r} is not one of the models {list(names)}")
        self.schedule = cfg.resolved(task)
        if self.schedule == SEQUENTIAL and task != "classification":
            raise ValueError("promotion schedule 'sequential' is for classification (regression: 'window', a paired "
                             "t-test on the absolute errors)")
        self.names = list(names)
        self.task = task
        self.cfg = cfg
        self.champion = champion
        self.labeled = 0  # labeled events the race has scored (with the champion's prediction)
        self.in_window = 0
        self.changed_at: int | None = None  # labeled count at the last change
        self.promotions = 0
        self.tests = 0  # tests performed (window schedule: one per challenger per window)
        self._pairs: dict[str, _Pair] = {}
        self._reset()

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def challengers(self) -> list[str]:
        return [n for n in self.names if n != self.champion]

    def _reset(self) -> None:
        self.in_window = 0
        self._pairs = {n: _Pair() for n in self.challengers}

    def _eligible(self) -> bool:
        cfg = self.cfg
        if self.labeled < cfg.min_events:
            return False
        return self.changed_at is None or self.labeled - self.changed_at >= cfg.cooldown

    def update(self, losses: Mapping[str, float | None]) -> Promotion | None:
        """One labeled event's loss per model (None: that model had no prediction for it); a promotion, if
        this event completes the evidence for one."""
        mine = losses.get(self.champion)
        if mine is None:
            return None
        self.labeled += 1
        self.in_window += 1
        regression, sequential = self.regression, self.schedule == SEQUENTIAL
        for name, pair in self._pairs.items():
            theirs = losses.get(name)
            if theirs is not None:
                pair.add(mine, theirs, regression, sequential)
        decided: Promotion | None = None
        if sequential and self._eligible():
            decided = self._sequential_winner()
        if decided is None and self.in_window >= self.cfg.window:
            if not sequential and self._eligible():
                decided = self._window_winner()
            if decided is None:
                self._reset()
        if decided is not None:
            self._change(decided.champion)
        return decided

    def _threshold(self) -> float:
        return self.cfg.alpha / len(self._pairs)

    def _sequential_winner(self) -> Promotion | None:
        threshold = math.log(1 / self._threshold())
        best: tuple[float, str, _Pair] | None = None
        for name, pair in self._pairs.items():
            gain = pair.gain(False)
            if pair.log_e >= threshold and gain >= self.cfg.min_gain and gain > 0 and (best is None or gain > best[0]):
                best = (gain, name, pair)
        if best is None:
            return None
        _, name, pair = best
        return self._promotion(name, pair, BETTING, math.exp(pair.log_e), min(1.0, math.exp(-pair.log_e)))

    def _window_winner(self) -> Promotion | None:
        best: tuple[float, str, _Pair, float, float] | None = None
        for name, pair in self._pairs.items():
            if pair.n < 2:
                continue
            self.tests += 1
            statistic, p = self._test(pair)
            gain = pair.gain(self.regression)
            if p <= self._threshold() and gain > 0 and gain >= self.cfg.min_gain and (best is None or gain > best[0]):
                best = (gain, name, pair, statistic, p)
        if best is None:
            return None
        _, name, pair, statistic, p = best
        return self._promotion(name, pair, PAIRED_T if self.regression else MCNEMAR, statistic, p)

    def _test(self, pair: _Pair) -> tuple[float, float]:
        """(statistic, one-sided p-value) for "the challenger is better" over the window."""
        if self.regression:
            diffs = pair.diffs
            mean = sum(diffs) / len(diffs)
            var = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
            if var == 0:
                return (math.inf if mean > 0 else 0.0), (0.0 if mean > 0 else 1.0)
            t = mean / math.sqrt(var / len(diffs))
            return t, float(stats.t.sf(t, len(diffs) - 1))
        discordant = pair.wins + pair.losses
        if discordant == 0:
            return 0.0, 1.0
        return float(pair.wins), float(stats.binom.sf(pair.wins - 1, discordant, 0.5))

    def _promotion(self, name: str, pair: _Pair, test: str, statistic: float, p: float) -> Promotion:
        return Promotion(previous=self.champion, champion=name, labeled=self.labeled, reason=TEST, test=test,
                         window=pair.n, loss_previous=pair.loss_champion / pair.n,
                         loss_champion=pair.loss_challenger / pair.n, statistic=statistic, p_value=p,
                         alpha=self._threshold())

    def _change(self, champion: str) -> None:
        self.champion = champion
        self.changed_at = self.labeled
        self.promotions += 1
        self._reset()

    def promote(self, name: str) -> Promotion:
        """Make ``name`` the champion now (a manual promotion; KeyError naming the models if unknown)."""
        if name not in self.names:
            raise KeyError(f"no model named {name!r}; the models are {', '.join(self.names)}")
        done = Promotion(previous=self.champion, champion=name, labeled=self.labeled, reason=MANUAL)
        if name != self.champion:
            self._change(name)
        return done

    # -- state ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"champion": self.champion, "labeled": self.labeled, "changed_at": self.changed_at,
                "promotions": self.promotions, "tests": self.tests}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore who serves and the schedule's counters (the current window's pairs start again). A champion
        no longer configured leaves the configured one serving."""
        if state.get("champion") in self.names:
            self.champion = str(state["champion"])
        self.labeled = int(state.get("labeled", 0))
        changed = state.get("changed_at")
        self.changed_at = int(changed) if changed is not None else None
        self.promotions = int(state.get("promotions", 0))
        self.tests = int(state.get("tests", 0))
        self._reset()
