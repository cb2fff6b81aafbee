"""Learners: the `Learner` protocol and its implementations.

`driftline.learners.river_head.RiverLearner` wraps River online models; `build_learner` picks
the implementation a model config asks for.
"""

from __future__ import annotations

from driftline.core import EventRejected, InputError, LabelError, Prediction
from driftline.learners.base import Learner

__all__ = ["EventRejected", "InputError", "LabelError", "Learner", "Prediction"]
