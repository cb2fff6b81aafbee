"""Drift detectors on the prequential error stream (River's), chosen by name with parameters.

Each labeled event feeds every configured detector its error: for classification 1 if the
prediction made before the label was wrong, else 0; for regression the absolute error (only the
detectors that take real values). Binary detectors (DDM, EDDM, HDDM_A, HDDM_W, FHDDM) also signal a
warning level. A detector that fires is reset by River itself and keeps watching.
"""

from __future__ import annotations

import pickle
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


@dataclass(frozen=True, slots=True)
class Detection:
    detector: str  # the configured name (e.g. "ADWIN" or "ADWIN#2" when a name repeats)
    level: str  # warning | drift
    labeled: int  # labeled events seen by the monitor when it fired
    error_mean: float  # mean error since the previous detection of this detector (the statistic it watched)


def _build(name: str, params: Mapping[str, Any], seed: int) -> Any:
    import importlib

    if name not in DETECTORS:
        raise ConfigError(f"drift.detectors: unknown detector {name!r}; valid: {', '.join(DETECTORS)}")
    module, _, attr = DETECTORS[name][0].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return construct(cls, params, where=f"drift.detectors.{name}.params", seed=seed)


class _Watch:
    def __init__(self, key: str, name: str, detector: Any) -> None:
        self.key = key
        self.binary, self.warns = DETECTORS[name][1:]
        self.detector = detector
        self.sum = 0.0
        self.n = 0
        self.warned = False


class DriftMonitor:
    """Feeds the error of every labeled event to the configured detectors; reports what fires."""

    def __init__(self, specs: Sequence[tuple[str, Mapping[str, Any]]], *, task: str, seed: int = 42) -> None:
        self.task = task
        self.watches: list[_Watch] = []
        seen: dict[str, int] = {}
        for name, params in specs:
            if task == "regression" and DETECTORS.get(name, ("", False, False))[1]:
                raise ConfigError(f"drift.detectors: {name} watches 0/1 errors and cannot take a regression "
                                  "model's absolute errors; use ADWIN, PageHinkley or KSWIN")
            seen[name] = seen.get(name, 0) + 1
            key = name if seen[name] == 1 else f"{name}#{seen[name]}"
            self.watches.append(_Watch(key, name, _build(name, params, seed)))
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
            w.detector.update((not err if w.key.startswith("FHDDM") else bool(err)) if w.binary else err)
            w.sum += err
            w.n += 1
            if w.detector.drift_detected:
                out.append(Detection(w.key, DRIFT, self.labeled, w.sum / w.n))
                w.sum, w.n, w.warned = 0.0, 0, False
            elif w.warns and w.detector.warning_detected:
                if not w.warned:  # once per warning zone, not on every event in it
                    out.append(Detection(w.key, WARNING, self.labeled, w.sum / w.n))
                    w.warned = True
            else:
                w.warned = False
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"labeled": self.labeled, "watches": pickle.dumps(
            [(w.key, w.detector, w.sum, w.n, w.warned) for w in self.watches], protocol=pickle.HIGHEST_PROTOCOL)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = pickle.loads(state["watches"])
        if [k for k, *_ in saved] != [w.key for w in self.watches]:
            raise ValueError(f"the state has detectors {[k for k, *_ in saved]}, the config "
                             f"{[w.key for w in self.watches]}")
        for w, (_, det, s, n, warned) in zip(self.watches, saved, strict=True):
            w.detector, w.sum, w.n, w.warned = det, s, n, warned
        self.labeled = int(state["labeled"])


def monitor_from(detectors: Sequence[Any], *, task: str, seed: int) -> DriftMonitor | None:
    """The monitor for ``drift.detectors`` settings (None when none are configured)."""
    if not detectors:
        return None
    return DriftMonitor([(d.name, d.params) for d in detectors], task=task, seed=seed)
