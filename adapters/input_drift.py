"""Label-free drift detection on the inputs: a recent window of events against a reference window.

- ``ks``: a two-sample Kolmogorov-Smirnov test per numeric feature (the features every reference
  event has); a drift when the smallest p-value times the number of features (Bonferroni) is below
  ``alpha``. For tabular events.
- ``mmd``: the (unbiased) squared maximum mean discrepancy between the backbone's embeddings of the
  window and of the reference, with a Gaussian kernel whose width is the median distance in the
  reference. The threshold is calibrated when the reference is complete: the largest MMD between a
  random split of the reference into window-sized and remaining parts over ``calibration_rounds``
  splits, times ``margin``. For text and deep backbones.

The reference is the first ``reference`` events, and again the first ``reference`` events after each
detection (the new domain becomes the reference, so one shift is reported once). Tests run every
``stride`` events once the window is full. Detections have source ``input``: only ladder rungs with
``on: input`` or ``any`` act on them.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from driftline.adapters.config import InputDriftSettings
from driftline.adapters.detectors import DRIFT, Detection
from driftline.core import Event
from driftline.errors import ConfigError
from driftline.learners.base import Learner
from driftline.learners.capabilities import has_backbone


class InputDriftMonitor:
    def __init__(self, cfg: InputDriftSettings, *, seed: int,
                 embed: Callable[[Event], Sequence[float]] | None = None) -> None:
        if cfg.kind is None:
            raise ValueError("input drift detection is off (drift.input.kind is null)")
        if cfg.kind == "mmd" and embed is None:
            raise ConfigError("drift.input.kind: mmd compares backbone embeddings, and this model has no backbone "
                              "(use ks for per-feature tests on tabular events)")
        self.cfg = cfg
        self.kind = cfg.kind
        self.name = cfg.kind.upper()
        self.embed = embed
        self._rng = np.random.default_rng(seed)
        self.seen = 0
        self._building: list[Any] = []
        self.reference: np.ndarray | None = None
        self.features: list[str] = []
        self.window: deque[Any] = deque(maxlen=cfg.window)
        self.since_test = 0
        # mmd
        self.gamma = 0.0
        self.threshold = 0.0
        self._k_ref: np.ndarray | None = None

    # -- the stream -------------------------------------------------------------------------------
    def _row(self, event: Event) -> Any:
        if self.kind == "mmd":
            assert self.embed is not None
            try:
                return np.asarray(self.embed(event), dtype=np.float64).reshape(-1)
            except ValueError:  # an event the backbone cannot read: dead-lettered elsewhere, not watched
                return None
        if not event.features:
            return None
        if self.reference is None:
            return {k: float(v) for k, v in event.features.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)}
        try:
            return np.array([float(event.features[f]) for f in self.features])
        except (KeyError, TypeError, ValueError):
            return None

    def update(self, event: Event) -> list[Detection]:
        """Watch one predicted event; the detections it caused (usually none)."""
        self.seen += 1
        row = self._row(event)
        if row is None:
            return []
        if self.reference is None:
            self._building.append(row)
            if len(self._building) >= self.cfg.reference:
                self._set_reference()
            return []
        self.window.append(row)
        self.since_test += 1
        if len(self.window) < self.cfg.window or self.since_test < self.cfg.stride:
            return []
        self.since_test = 0
        fired, statistic = self._test()
        if not fired:
            return []
        self.reference, self._building, self.window = None, [], deque(maxlen=self.cfg.window)
        return [Detection(self.name, DRIFT, self.seen, float(statistic["value"]), source="input",
                          statistic=statistic)]

    # -- reference and tests ----------------------------------------------------------------------
    def _set_reference(self) -> None:
        rows, self._building = self._building, []
        if self.kind == "ks":
            common = set(rows[0])
            for r in rows[1:]:
                common &= set(r)
            self.features = sorted(common)
            self.reference = np.array([[r[f] for f in self.features] for r in rows])
            return
        ref = np.stack(rows)
        self.reference = ref
        d2 = _sq_dists(ref, ref)
        med = float(np.median(d2[np.triu_indices(len(ref), 1)]))
        self.gamma = 1.0 / med if med > 0 else 1.0
        k = np.exp(-self.gamma * d2)
        n, m = len(ref), self.cfg.window
        null = []
        for _ in range(self.cfg.calibration_rounds):
            perm = self._rng.permutation(n)
            a, b = perm[: n - m], perm[n - m:]
            null.append(_mmd2(k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]))
        self.threshold = max(null) * self.cfg.margin
        self._k_ref = k

    def _test(self) -> tuple[bool, dict[str, Any]]:
        assert self.reference is not None
        win = np.stack(list(self.window))
        if self.kind == "ks":
            from scipy.stats import ks_2samp  # type: ignore[import-untyped]

            if not self.features:
                return False, {}
            best_p, best_d, best_f = 1.0, 0.0, ""
            for j, f in enumerate(self.features):
                res = ks_2samp(self.reference[:, j], win[:, j])
                if res.pvalue < best_p:
                    best_p, best_d, best_f = float(res.pvalue), float(res.statistic), f
            p_adj = min(best_p * len(self.features), 1.0)
            return p_adj < self.cfg.alpha, {"name": "ks", "value": best_d, "feature": best_f,
                                            "p_value_bonferroni": p_adj, "alpha": self.cfg.alpha}
        k_ww = np.exp(-self.gamma * _sq_dists(win, win))
        k_rw = np.exp(-self.gamma * _sq_dists(self.reference, win))
        assert self._k_ref is not None
        value = _mmd2(self._k_ref, k_ww, k_rw)
        return value > self.threshold, {"name": "mmd2", "value": value, "threshold": self.threshold}

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"blob": pickle.dumps({k: v for k, v in self.__dict__.items() if k not in ("cfg", "embed")},
                                     protocol=pickle.HIGHEST_PROTOCOL)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        saved = pickle.loads(state["blob"])
        if saved.get("kind") != self.kind:
            raise ValueError(f"the state is of input detector {saved.get('kind')!r}, the config has {self.kind!r}")
        self.__dict__.update(saved)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)  # type: ignore[no-any-return]


def _mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased squared MMD from the kernel blocks."""
    n, m = len(k_xx), len(k_yy)
    xx = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * k_xy.mean())


def input_monitor_from(cfg: InputDriftSettings, *, seed: int, learner: Learner) -> InputDriftMonitor | None:
    """The input monitor ``drift.input`` describes (None when off); mmd reads the learner's backbone embeddings."""
    if cfg.kind is None:
        return None
    holder = has_backbone(learner)
    embed = holder.embedding if holder is not None and holder.backbone.cfg.kind != "identity" else None
    return InputDriftMonitor(cfg, seed=seed, embed=embed)
