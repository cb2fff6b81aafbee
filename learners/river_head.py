"""River online models (optionally behind scaling and one-hot encoding) as a `Learner`.

Binary-only River classifiers (LogisticRegression, Perceptron) learn booleans: with exactly two
configured classes the first maps to False and the second to True; without a class set they are
wrapped in one-vs-rest so any labels work. A configured class set is enforced: other labels raise
`LabelError("unknown_label")`.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError, Label, LabelError, Prediction, Task
from driftline.errors import ConfigError
from driftline.learners.base import LearnerBase, check_fingerprint, check_label_type, check_state_header
from driftline.learners.config import ModelSettings
from driftline.learners.preprocessing import FeaturePrep
from driftline.learners.registry import CLASSIFIERS, REGRESSORS, resolve

STATE_KIND = "driftline.river/2"


def _build_estimator(cfg: ModelSettings) -> Any:
    registry = CLASSIFIERS if cfg.task == "classification" else REGRESSORS
    cls = resolve(registry[cfg.name])
    accepted = inspect.signature(cls).parameters
    params: dict[str, Any] = {}
    for key, value in cfg.params.items():
        if key not in accepted:
            raise ConfigError(
                f"model.params.{key}: {cfg.name} has no parameter {key!r}; accepted: {', '.join(accepted)}"
            )
        if key == "optimizer" and isinstance(value, Mapping):
            params[key] = _build_optimizer(dict(value))
        else:
            params[key] = value
    if "seed" in accepted and "seed" not in params:
        params["seed"] = cfg.seed
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.params: {cfg.name}({params!r}) failed: {exc}") from exc


def _build_optimizer(spec: dict[str, Any]) -> Any:
    from river import optim

    name = spec.pop("name", "SGD")
    cls = getattr(optim, str(name), None)
    if cls is None or not isinstance(cls, type):
        raise ConfigError(f"model.params.optimizer.name: unknown River optimizer {name!r}")
    try:
        return cls(**spec)
    except TypeError as exc:
        raise ConfigError(f"model.params.optimizer: {name}({spec!r}) failed: {exc}") from exc


class RiverLearner(LearnerBase):
    """A River estimator (with preprocessing) behind the `Learner` protocol."""

    def __init__(self, cfg: ModelSettings) -> None:
        self.cfg = cfg
        self.task: Task = cfg.task
        self.name = cfg.name
        self._classes: tuple[Label, ...] | None = tuple(cfg.classes) if cfg.classes else None
        self._binary_map: dict[Label, bool] | None = None
        estimator = _build_estimator(cfg)
        if self.task == "classification" and not getattr(estimator, "_multiclass", True):
            if self._classes is not None and len(self._classes) == 2:
                self._binary_map = {self._classes[0]: False, self._classes[1]: True}
            else:
                from river import multiclass

                estimator = multiclass.OneVsRestClassifier(estimator)
        self._prep = FeaturePrep(scale=cfg.scale, one_hot=cfg.one_hot, max_features=cfg.max_features)
        self._max_features = cfg.max_features
        self._model = estimator
        self._version = 1
        self._updates = 0
        self.fingerprint: dict[str, Any] | None = None  # the backbone's, for learners that have one

    # -- identity -------------------------------------------------------------------------
    # -- test-then-train ------------------------------------------------------------------
    def prepare_batch(self, xs: Sequence[Event]) -> None:
        """Nothing to precompute: the features are the input."""

    def _features(self, x: Event) -> Mapping[str, Any]:
        """The head's input for an event (here: its features as they are)."""
        if not x.features:
            raise InputError(
                INPUT_KIND_MISMATCH,
                f"{self.name} learns from `features`, and this event has {x.payloads()} (text needs a text "
                "backbone, images and tensors a vision backbone: model.backbone)",
            )
        return x.features

    def predict_one(self, x: Event) -> Prediction:
        features = self._features(x)
        if self.task == "regression":
            if not self._trained():
                return Prediction(None)
            return Prediction(float(self._model.predict_one(self._prep.transform_one(features))))
        proba = self._model.predict_proba_one(self._prep.transform_one(features))
        if not proba:
            return Prediction(None, {})
        if self._binary_map is not None:
            assert self._classes is not None
            proba = {self._classes[0]: proba.get(False, 0.0), self._classes[1]: proba.get(True, 0.0)}
        proba = {k: float(v) for k, v in proba.items()}
        best = max(proba.items(), key=lambda kv: kv[1])[0]
        return Prediction(best, proba)

    @property
    def features_dropped(self) -> int:
        return self._prep.dropped

    def _trained(self) -> bool:
        """Whether the model has learned anything (an untrained regressor predicts nothing, not 0)."""
        return self._updates > 0

    def learn_one(self, x: Event, y: Label | float) -> None:
        features = self._features(x)
        target = self._check_label(y)
        self._model.learn_one(self._prep.learn_transform_one(features), target)
        self._updates += 1



    def _check_label(self, y: Label | float) -> Any:
        checked = check_label_type(self.task, y)
        if isinstance(checked, float):  # regression
            return checked
        y = checked
        if self._classes is not None and y not in self._classes:
            raise LabelError("unknown_label", f"label {y!r} is not one of the configured classes {self._classes!r}")
        if self._binary_map is not None:
            return self._binary_map[y]
        return y

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": STATE_KIND,
            "task": self.task,
            "name": self.name,
            "classes": self._classes,
            "version": self._version,
            "updates": self._updates,
            "model": pickle.dumps((self._prep, self._model), protocol=pickle.HIGHEST_PROTOCOL),
            "backbone": self.fingerprint,
            "norm": self._norm_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_header(state, STATE_KIND, "River learner", self.task, self.name)
        if state["classes"] != self._classes:
            raise ValueError(f"state has classes {state['classes']!r}, config has {self._classes!r}")
        check_fingerprint(state.get("backbone"), self.fingerprint)
        self._prep, self._model = pickle.loads(state["model"])
        self._prep.bound(self._max_features)  # the configured bound wins over the saved one
        self._load_norm_state(state)
        self._version = int(state["version"])
        self._updates = int(state["updates"])

