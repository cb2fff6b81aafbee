"""``WindowedTreeClassifier``: a batch-incremental classifier, a CART tree refit on a sliding window.

Instance-incremental trees (Hoeffding trees) split only when the Hoeffding bound is sure, which takes
thousands of events on concepts such as River's Agrawal function 4: a fresh Hoeffding tree scores ~0.80 on
its events 1,000-2,000 of that concept, where scikit-learn's CART, fit on 500 of them, scores 0.97. After an
abrupt drift, how fast the model relearns bounds how fast it recovers. This model keeps the last
``window`` labeled examples and refits a `sklearn.tree.DecisionTreeClassifier` on them every
``refit_every`` examples (and at the first ``min_samples`` ones): it forgets by design (what left the
window is gone), and it relearns a new concept as fast as CART learns from the window — the
"batch-incremental" learner of Read et al. (2012), as a River classifier, so that it runs behind the same
preprocessing, state and adaptation policies as every River head (a ``reset`` empties the window).

Features are the union of the keys seen in the window, in sorted order; a key an example lacks is a
missing value (CART handles them). Values must be numbers (one-hot encoding, on by default, turns strings
into numbers before they reach the model).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from typing import Any

from river import base


class WindowedTreeClassifier(base.Classifier):
    def __init__(self, window: int = 1000, refit_every: int = 50, min_samples: int = 10,
                 max_depth: int | None = None, min_samples_leaf: int = 3, seed: int | None = None) -> None:
        for name, value, low in (("window", window, 2), ("refit_every", refit_every, 1),
                                 ("min_samples", min_samples, 2), ("min_samples_leaf", min_samples_leaf, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if max_depth is not None and (not isinstance(max_depth, int) or max_depth < 1):
            raise ValueError(f"max_depth must be None or an integer >= 1, got {max_depth!r}")
        self.window = window
        self.refit_every = refit_every
        self.min_samples = min_samples
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed
        self._xs: deque[dict[Hashable, Any]] = deque(maxlen=window)
        self._ys: deque[Any] = deque(maxlen=window)
        self._since_fit = 0
        self._tree: Any = None
        self._keys: list[Hashable] = []
        self._labels: list[Any] = []  # class codes -> labels (CART wants numeric classes)
        self._codes: dict[Any, int] = {}

    @property
    def _multiclass(self) -> bool:
        return True

    def learn_one(self, x: dict[Hashable, Any], y: Any) -> None:
        code = self._codes.get(y)
        if code is None:
            code = self._codes[y] = len(self._labels)
            self._labels.append(y)
        self._xs.append(dict(x))
        self._ys.append(code)
        self._since_fit += 1
        n = len(self._ys)
        if n >= self.min_samples and (self._tree is None or self._since_fit >= self.refit_every):
            self._fit()

    def _row(self, x: dict[Hashable, Any]) -> list[float]:
        row = []
        for k in self._keys:
            v = x.get(k)
            if v is None:
                row.append(math.nan)
                continue
            try:
                row.append(float(v))
            except (TypeError, ValueError):
                raise ValueError(f"feature {k!r} is {v!r}: WindowedTreeClassifier needs numbers "
                                 "(keep model.one_hot on for strings)") from None
        return row

    def _fit(self) -> None:
        import numpy as np
        from sklearn.tree import DecisionTreeClassifier

        self._keys = sorted({k for x in self._xs for k in x}, key=str)
        tree = DecisionTreeClassifier(max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf,
                                      random_state=self.seed)
        tree.fit(np.array([self._row(x) for x in self._xs], dtype=float), np.fromiter(self._ys, dtype=np.int64))
        self._tree = tree
        self._since_fit = 0

    def predict_proba_one(self, x: dict[Hashable, Any], **kwargs: Any) -> dict[Any, float]:
        if self._tree is None:
            return {}
        import numpy as np

        # the fitted tree's own traversal: `predict_proba`'s input validation costs ~10x the walk down
        counts = self._tree.tree_.predict(np.array([self._row(x)], dtype=np.float32))[0, :len(self._tree.classes_)]
        total = float(counts.sum()) or 1.0
        return {self._labels[c]: float(p) / total for c, p in zip(self._tree.classes_.tolist(), counts, strict=True)}
