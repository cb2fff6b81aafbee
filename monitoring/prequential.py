"""Prequential (test-then-train) quality: cumulative and rolling-window accuracy or MAE/RMSE.

Each update takes the prediction made *before* the model saw the label. O(1) per update.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable
from typing import Any


class ClassificationTracker:
    """Accuracy over everything seen and over the last ``window`` labeled events."""

    metric = "accuracy"  # what `cumulative` and `rolling` measure

    def __init__(self, window: int) -> None:
        self.window = window
        self.n = 0
        self.correct = 0
        self._recent: deque[bool] = deque(maxlen=window)
        self._recent_correct = 0

    def update(self, y_true: Any, y_pred: Any) -> bool:
        ok = y_pred is not None and y_pred == y_true and type(y_pred) is type(y_true)
        self.n += 1
        self.correct += ok
        if len(self._recent) == self.window:
            self._recent_correct -= self._recent[0]
        self._recent.append(ok)
        self._recent_correct += ok
        return ok

    def update_many(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        """`update` for each (y_true, y_pred) in order, at once (a batch's labeled events)."""
        oks = [p is not None and p == y and type(p) is type(y) for y, p in pairs]
        good, k = sum(oks), len(oks)
        self.n += k
        self.correct += good
        recent, window = self._recent, self.window
        if k >= window:
            recent.extend(oks)
            self._recent_correct = sum(recent)
            return
        drop = len(recent) + k - window
        if drop > 0:
            self._recent_correct -= sum(itertools.islice(recent, drop))
        recent.extend(oks)
        self._recent_correct += good

    @property
    def cumulative_accuracy(self) -> float:
        return self.correct / self.n if self.n else math.nan

    @property
    def rolling_accuracy(self) -> float:
        return self._recent_correct / len(self._recent) if self._recent else math.nan

    cumulative = cumulative_accuracy
    rolling = rolling_accuracy

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "n": self.n, "correct": self.correct, "recent": list(self._recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(int(state["window"]))  # type: ignore[misc]
        self.n, self.correct = int(state["n"]), int(state["correct"])
        for ok in state["recent"]:
            self._recent.append(bool(ok))
            self._recent_correct += bool(ok)


class RegressionTracker:
    """MAE and RMSE over everything seen and over the last ``window`` labeled events.

    A missing prediction (model not trained yet) is scored as predicting 0.0.
    """

    metric = "mae"  # what `cumulative` and `rolling` measure

    def __init__(self, window: int) -> None:
        self.window = window
        self.n = 0
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self._recent: deque[float] = deque(maxlen=window)
        self._r_abs = 0.0
        self._r_sq = 0.0

    def update(self, y_true: float, y_pred: float | None) -> float:
        err = float(y_true) - (0.0 if y_pred is None else float(y_pred))
        self.n += 1
        self.abs_sum += abs(err)
        self.sq_sum += err * err
        if len(self._recent) == self.window:
            old = self._recent[0]
            self._r_abs -= abs(old)
            self._r_sq -= old * old
        self._recent.append(err)
        self._r_abs += abs(err)
        self._r_sq += err * err
        return err

    def update_many(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        """`update` for each (y_true, y_pred) in order."""
        for y, p in pairs:
            self.update(y, p)

    @property
    def cumulative_mae(self) -> float:
        return self.abs_sum / self.n if self.n else math.nan

    @property
    def cumulative_rmse(self) -> float:
        return math.sqrt(self.sq_sum / self.n) if self.n else math.nan

    @property
    def rolling_mae(self) -> float:
        return max(self._r_abs, 0.0) / len(self._recent) if self._recent else math.nan

    @property
    def rolling_rmse(self) -> float:
        return math.sqrt(max(self._r_sq, 0.0) / len(self._recent)) if self._recent else math.nan

    cumulative = cumulative_mae
    rolling = rolling_mae

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "n": self.n, "abs_sum": self.abs_sum, "sq_sum": self.sq_sum,
                "recent": list(self._recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__init__(int(state["window"]))  # type: ignore[misc]
        self.n, self.abs_sum, self.sq_sum = int(state["n"]), float(state["abs_sum"]), float(state["sq_sum"])
        for err in state["recent"]:
            self._recent.append(float(err))
            self._r_abs += abs(err)
            self._r_sq += err * err


Tracker = ClassificationTracker | RegressionTracker


def make_tracker(task: str, window: int) -> Tracker:
    """The tracker for a task: accuracy for classification, MAE/RMSE for regression."""
    return ClassificationTracker(window) if task == "classification" else RegressionTracker(window)
