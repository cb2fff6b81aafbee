"""Feature preprocessing for River heads: standard-scale numbers, one-hot encode strings.

One pass over the feature dict splits numbers from strings (River's ``SelectType`` union does two
passes with ``isinstance`` checks against ABCs, ~40 us per event). Scaling uses River's own
``StandardScaler``; one-hot names follow River's ``OneHotEncoder`` (``name_value``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FeaturePrep:
    """Picklable, deterministic preprocessing with River semantics, keeping at most ``max_features``
    distinct names (numbers, and one-hot ``name_value`` columns): names first seen once that many are known
    are left out of the event (for learning and predicting alike) and counted in ``dropped``."""

    def __init__(self, *, scale: bool, one_hot: bool, max_features: int | None = None) -> None:
        from river import preprocessing

        self.scale = scale
        self.one_hot = one_hot
        self.scaler: Any = preprocessing.StandardScaler() if scale else None
        self.max_features = max_features
        self.known: set[str] = set()
        self.dropped = 0

    def __setstate__(self, state: dict[str, Any]) -> None:  # checkpoints from before the bound
        self.__dict__.update({"max_features": None, "known": set(), "dropped": 0, **state})

    def bound(self, max_features: int | None) -> None:
        self.max_features = max_features

    def _admit(self, part: dict[str, float], learning: bool) -> None:
        """Leave out of ``part`` the names the bound keeps out (learning admits new names while there is
        room; predicting never admits, and leaves unknown names in while there is room: they mean nothing yet)."""
        limit, known = self.max_features, self.known
        if limit is None or known.issuperset(part):
            return
        for name in [n for n in part if n not in known]:
            if len(known) < limit:
                if learning:
                    known.add(name)
                continue
            del part[name]
            if learning:
                self.dropped += 1

    def _split(self, x: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
        num: dict[str, float] = {}
        cat: dict[str, float] = {}
        for k, v in x.items():
            if type(v) is str:
                if self.one_hot:
                    cat[f"{k}_{v}"] = 1.0
            else:
                num[k] = v
        return num, cat

    def transform_one(self, x: Mapping[str, Any]) -> dict[str, float]:
        num, cat = self._split(x)
        if self.max_features is not None:
            self._admit(num, learning=False)
            self._admit(cat, learning=False)
        out: dict[str, float] = self.scaler.transform_one(num) if self.scaler is not None else num
        if cat:
            out.update(cat)
        return out

    def learn_transform_one(self, x: Mapping[str, Any]) -> dict[str, float]:
        """Update the scaling statistics with ``x``, then transform it (River's pipeline order)."""
        num, cat = self._split(x)
        if self.max_features is not None:
            self._admit(num, learning=True)
            self._admit(cat, learning=True)
        if self.scaler is not None:
            self.scaler.learn_one(num)
            out: dict[str, float] = self.scaler.transform_one(num)
        else:
            out = num
        if cat:
            out.update(cat)
        return out
