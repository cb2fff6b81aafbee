"""Drift detectors on the prequential error stream (River's), chosen by name with parameters.

Each labeled event feeds every configured detector its error: for classification 1 if the
prediction made before the label was wrong, else 0; for regression the absolute error (only the
detectors that take real values). Binary detectors (DDM, EDDM, HDDM_A, HDDM_W, FHDDM) also signal a
warning level. A detector that fires is reset by River itself and keeps watching.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.errors import ConfigError
from driftline.params import construct

# name -> (import path, takes only 0/1 errors, has a warning level). FHDDM is fed 1 = correct: River 0.26's
# implementation flags a fall of its input's mean (MOA's accuracy semantics) although its docstring says
# 1 = error; fed errors it misses a rise of the error rate (measured: 4 of 5 seeded drifts missed).
DETECTORS: dict[str, tuple[str, bool, bool]] = {
    "ADWIN": ("river.drift:ADWIN", False, False),
    "PageHinkley": ("river.drift:PageHinkley", False, False),
    "KSWIN": ("river.drift:KSWIN", False, False),
    "DDM": ("river.drift.binary:DDM", True, True),
    "EDDM": ("river.drift.binary:EDDM", True, True),
    "HDDM_A": ("river.drift.binary:HDDMA", True, True),
    "HDDM_W": ("river.drift.binary:HDDMW", True, True),
    "FHDDM": ("river.drift.binary:FHDDM", True, False),
}

WARNING = "warning"
DRIFT = "drift"
IMPROVEMENT = "improvement"
_RECENT = 32  # latest errors compared with the older ones to tell a rise from a fall
_HISTORY = 5000  # errors kept (to compare, and to rebuild a detector after an improvement)


@dataclass(frozen=True, slots=True)
class Detection:
    detector: str  # the configured name (e.g. "ADWIN" or "ADWIN#2" when a name repeats)
    level: str  # warning | drift | improvement
    labeled: int  # labeled events seen by the monitor when it fired
    error_mean: float  # mean error since the previous detection of this detector (the statistic it watched)
    recent_error: float | None = None  # mean error of the latest events (after the estimated change)
    since_change: int | None = None  # events since the estimated change point, when the detector knows it
    source: str = "error"  # error (the prequential error stream) | input (label-free, on the inputs)
    statistic: Mapping[str, Any] | None = None  # input detectors: the test's statistic, p-value or threshold


def _build(name: str, params: Mapping[str, Any], seed: int) -> Any:
    import importlib

    if name not in DETECTORS:
        raise ConfigError(f"drift.detectors: unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    module, _, attr = DETECTORS[name][0].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return construct(cls, params, where=f"drift.detectors.{name}.params", seed=seed)


class _Watch:
    def __init__(self, key: str, name: str, detector: Any, signals: str) -> None:
        self.key = key
        self.binary, self.warns = DETECTORS[name][1:]
        self.adwin = name == "ADWIN"
        self.fhddm = name == "FHDDM"
        self.signals = signals
        self.detector = detector
        self.sum = 0.0
        self.n = 0  # errors since the last signal (the last n of `history`, up to its length)
        self.warned = False
        self.history: deque[float] = deque(maxlen=_HISTORY)

    def recent(self) -> list[float]:
        """The latest errors since the last signal, at most ``_RECENT``."""
        k = min(self.n, _RECENT, len(self.history))
        return list(self.history)[-k:] if k else []

    def direction(self, before: float | None) -> tuple[bool, float, int | None]:
        """(did the error rise?, recent error mean, events since the change) at a drift signal."""
        if self.adwin:  # ADWIN keeps the window after the cut: its mean against the mean before
            after = float(self.detector.estimation)
            return after > (before if before is not None else -1.0), after, int(self.detector.width)
        latest = self.recent()
        recent = sum(latest) / len(latest) if latest else 0.0
        older_n = self.n - len(latest)
        if older_n <= 0:
            return True, recent, None  # nothing older since the last signal to compare with: a rise
        return recent > (self.sum - sum(latest)) / older_n, recent, None

    def feed(self, err: float) -> None:
        self.detector.update((not err if self.fhddm else bool(err)) if self.binary else err)

    def restart(self, rose: bool, since: int | None) -> None:
        """After a signal. A rise: start over (River resets the detector itself). A fall: a fresh detector
        fed the errors since the change (ADWIN's kept window, else the latest), instead of River's reset
        to nothing."""
        self.warned = False
        if rose:
            self.sum, self.n = 0.0, 0
            return
        tail = list(self.history)[-min(since or len(self.recent()), len(self.history)):]
        self.sum, self.n = sum(tail), len(tail)
        self.detector = self.detector.clone()
        for err in tail:
            self.feed(err)


class DriftMonitor:
    """Feeds the error of every labeled event to the configured detectors; reports what fires."""

    def __init__(self, specs: Sequence[tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str]], *,
                 task: str, seed: int = 42) -> None:
        self.task = task
        self.watches: list[_Watch] = []
        seen: dict[str, int] = {}
        for spec in specs:
            name, params = spec[0], spec[1]
            signals = spec[2] if len(spec) > 2 else DRIFT
            if task == "regression" and DETECTORS.get(name, ("", False, False))[1]:
                raise ConfigError(f"drift.detectors: {name} watches 0/1 errors and cannot take a regression "
                                  "model's absolute errors; use ADWIN, PageHinkley or KSWIN")
            seen[name] = seen.get(name, 0) + 1
            key = name if seen[name] == 1 else f"{name}#{seen[name]}"
            self.watches.append(_Watch(key, name, _build(name, params, seed), signals))
        self.labeled = 0

    def update(self, y_true: Any, y_pred: Any) -> list[Detection]:
        """Feed one labeled event; the detections it caused (usually none)."""
        self.labeled += 1
        if self.task == "classification":
            err: float = 0.0 if y_pred == y_true else 1.0
        else:
            err = abs(float(y_true) - float(y_pred)) if y_pred is not None else 0.0
        out: list[Detection] = []
        for w in self.watches:
            before = float(w.detector.estimation) if w.adwin else None
            w.feed(err)
            w.sum += err
            w.n += 1
            w.history.append(err)
            if w.detector.drift_detected:
                rose, recent, since = w.direction(before)
                out.append(Detection(w.key, w.signals if rose else IMPROVEMENT, self.labeled, w.sum / w.n,
                                     recent, since))
                w.restart(rose, since)
            elif w.warns and w.detector.warning_detected:
                if not w.warned:  # once per warning zone, not on every event in it
                    out.append(Detection(w.key, WARNING, self.labeled, w.sum / w.n))
                    w.warned = True
            else:
                w.warned = False
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"labeled": self.labeled, "watches": pickle.dumps(
            [(w.key, w.detector, w.sum, w.n, w.warned, list(w.history)) for w in self.watches],
            protocol=pickle.HIGHEST_PROTOCOL)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = pickle.loads(state["watches"])
        if [k for k, *_ in saved] != [w.key for w in self.watches]:
            raise ValueError(f"the state has detectors {[k for k, *_ in saved]}, the config "
                             f"{[w.key for w in self.watches]}")
        for w, (_, det, s, n, warned, *history) in zip(self.watches, saved, strict=True):
            w.detector, w.sum, w.n, w.warned = det, s, n, warned
            w.history = deque(history[-1] if history else (), maxlen=_HISTORY)  # none in 0.x states before it
        self.labeled = int(state["labeled"])


def monitor_from(detectors: Sequence[Any], *, task: str, seed: int) -> DriftMonitor | None:
    """The monitor for ``drift.detectors`` settings (None when none are configured)."""
    if not detectors:
        return None
    return DriftMonitor([(d.name, d.params, d.signals) for d in detectors], task=task, seed=seed)
