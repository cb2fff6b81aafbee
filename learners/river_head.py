"""River online models (optionally behind scaling and one-hot encoding) as a `Learner`.

Binary-only River classifiers (LogisticRegression, Perceptron) learn booleans: with exactly two
configured classes the first maps to False and the second to True; without a class set they are
wrapped in one-vs-rest so any labels work. A configured class set is enforced: other labels raise
`LabelError("unknown_label")`.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError, Label, LabelError, Prediction, Task
from driftline.learners.base import LearnerBase, check_fingerprint, check_label_type, check_state_header
from driftline.learners.config import ModelSettings
from driftline.learners.preprocessing import FeaturePrep
from driftline.learners.river_models import build_estimator

if TYPE_CHECKING:
    from driftline.learners.text_features import TextFeaturizer

STATE_KIND = "driftline.river/2"


def _build_estimator(cfg: ModelSettings) -> Any:
    return build_estimator(cfg.name, cfg.params, task=cfg.task, seed=cfg.seed)


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
        self._votes_only = False  # the model has no predict_proba_one
        self._text: TextFeaturizer | None = None
        if cfg.text_features is not None:
            from driftline.learners.text_features import TextFeaturizer

            self._text = TextFeaturizer(cfg.text_features, cfg.max_features)
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

    def _input(self, x: Event, *, learning: bool) -> dict[str, Any]:
        """The model's input for ``x``: its features preprocessed, and with `text_features` its text's terms
        (feature names win over terms of the same name)."""
        text = self._text
        if text is None:
            features = self._features(x)
            return self._prep.learn_transform_one(features) if learning else self._prep.transform_one(features)
        if not x.features and x.text is None:
            raise InputError(INPUT_KIND_MISMATCH, f"{self.name} learns from `text` (model.text_features) and "
                                                  f"`features`, and this event has {x.payloads()}")
        out = (text.learn_transform(x.text) if learning else text.transform(x.text)) if x.text else {}
        if x.features:
            out.update(self._prep.learn_transform_one(x.features) if learning else self._prep.transform_one(x.features))
        return out

    def predict_one(self, x: Event) -> Prediction:
        features = self._input(x, learning=False)
        if self.task == "regression":
            if not self._trained():
                return Prediction(None)
            return Prediction(float(self._model.predict_one(features)))
        if self._votes_only:
            return self._vote(features)
        try:
            proba = self._model.predict_proba_one(features)
        except NotImplementedError:  # a classifier that only votes (e.g. multiclass.OneVsOneClassifier)
            self._votes_only = True
            return self._vote(features)
        if not proba:
            return Prediction(None, {})
        if self._binary_map is not None:
            assert self._classes is not None
            proba = {self._classes[0]: proba.get(False, 0.0), self._classes[1]: proba.get(True, 0.0)}
        proba = {k: float(v) for k, v in proba.items()}
        best = max(proba.items(), key=lambda kv: kv[1])[0]
        return Prediction(best, proba)

    def _vote(self, features: dict[str, Any]) -> Prediction:
        """A classifier without probabilities: its vote, with probability 1."""
        value = self._model.predict_one(features)
        if value is None:
            return Prediction(None, {})
        if self._binary_map is not None:
            assert self._classes is not None
            value = self._classes[1] if value else self._classes[0]
        return Prediction(value, {value: 1.0})

    @property
    def features_dropped(self) -> int:
        return self._prep.dropped + (self._text.dropped if self._text is not None else 0)

    def _trained(self) -> bool:
        """Whether the model has learned anything (an untrained regressor predicts nothing, not 0)."""
        return self._updates > 0

    def learn_one(self, x: Event, y: Label | float) -> None:
        target = self._check_label(y)
        self._model.learn_one(self._input(x, learning=True), target)
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
            "model": pickle.dumps((self._prep, self._model, self._text), protocol=pickle.HIGHEST_PROTOCOL),
            "backbone": self.fingerprint,
            "norm": self._norm_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        check_state_header(state, STATE_KIND, "River learner", self.task, self.name)
        if state["classes"] != self._classes:
            raise ValueError(f"state has classes {state['classes']!r}, config has {self._classes!r}")
        check_fingerprint(state.get("backbone"), self.fingerprint)
        parts = pickle.loads(state["model"])
        text = parts[2] if len(parts) > 2 else None  # states from before text_features hold two parts
        if (text is None) != (self._text is None):
            raise ValueError(f"state was learned {'with' if text is not None else 'without'} text_features, the "
                             f"config has {'them' if self._text is not None else 'none'}")
        self._prep, self._model, self._text = parts[0], parts[1], text
        self._prep.bound(self._max_features)  # the configured bound wins over the saved one
        if self._text is not None:
            self._text.bound(self._max_features)
        self._load_norm_state(state)
        self._version = int(state["version"])
        self._updates = int(state["updates"])

