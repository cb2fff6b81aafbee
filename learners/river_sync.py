"""River's linear models as mergeable learners: their parameters as data (`driftline.learners.mergeable`), so the
members of a group can average them (``sync.mode: average``).

What is merged: the weights and intercept of LogisticRegression, Perceptron and LinearRegression (also inside
the one-vs-rest wrapper a binary model gets without two configured classes: per class), SoftmaxRegression's
per-class weights (MEAN entries, averaged), and the scaler's running count/mean/variance per feature (MOMENTS,
combined exactly). Naive Bayes is merged exactly: GaussianNB's class counts (SUM) and per class and feature
Gaussian (count, mean, variance: MOMENTS), MultinomialNB's class counts, per-class totals and per-class feature
counts (SUM): the merged model is the one a single instance would have learned from every member's events.
What stays each member's own: the optimizer's state (SGD's step count, Adam's moments), the feature bound's
admitted names.
"""

from __future__ import annotations

import collections
import functools
import json
from typing import Any, ClassVar

from river import multiclass, naive_bayes, utils

from driftline.core import Label
from driftline.learners.capabilities import Capability
from driftline.learners.mergeable import Entry, Params, mean_entry, moments_entry, sum_entry
from driftline.learners.registry import MERGEABLE_RIVER
from driftline.learners.river_head import STATE_KIND, RiverLearner


def _cls(label: Label) -> str:
    return json.dumps(label)


class MergeableRiverLearner(RiverLearner):
    """A River linear model whose parameters can be exported and replaced as data."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.MERGEABLE})

    @property
    def sync_kind(self) -> str:
        """What must be equal for two members to merge: model, task, classes, preprocessing."""
        cfg = self.cfg
        return json.dumps({"state": STATE_KIND, "task": self.task, "name": self.name,
                           "classes": list(self._classes) if self._classes is not None else None,
                           "scale": cfg.scale, "one_hot": cfg.one_hot}, sort_keys=True)

    def _trained(self) -> bool:
        """Learned here, or adopted from the group (a joiner serves the group's model from its first event)."""
        return self._updates > 0 or len(self._model._weights) > 0  # (regression: LinearRegression)

    def sync_params(self) -> Params:
        out: Params = {}
        scaler = self._prep.scaler
        if scaler is not None:
            out["scaler"] = moments_entry({k: (float(n), float(scaler.means[k]), float(scaler.vars[k]))
                                           for k, n in scaler.counts.items()})
        model = self._model
        if isinstance(model, naive_bayes.GaussianNB | naive_bayes.MultinomialNB):
            out.update(_nb_params(model))
        elif self.name == "SoftmaxRegression":
            for label, w in model.weights.items():
                out[f"w/{_cls(label)}"] = mean_entry(dict(w))
        elif isinstance(model, multiclass.OneVsRestClassifier):  # around a binary model
            binaries: dict[Label, Any] = model.classifiers  # River linear models
            for label, clf in binaries.items():
                out[f"w/{_cls(label)}"] = mean_entry(dict(clf._weights))
                out[f"b/{_cls(label)}"] = mean_entry({"": float(clf.intercept)})
        else:
            out["w"] = mean_entry(dict(model._weights))
            out["b"] = mean_entry({"": float(model.intercept)})
        return out

    def load_sync_params(self, params: Params) -> None:
        scaler = self._prep.scaler
        if scaler is not None and "scaler" in params:
            rows = params["scaler"].rows()
            scaler.counts = collections.Counter({k: r[0] for k, r in rows.items()})
            scaler.means = collections.defaultdict(float, {k: r[1] for k, r in rows.items()})
            scaler.vars = collections.defaultdict(float, {k: r[2] for k, r in rows.items()})
        model = self._model
        if isinstance(model, naive_bayes.GaussianNB | naive_bayes.MultinomialNB):
            _load_nb(model, params)
        elif self.name == "SoftmaxRegression":
            weights: dict[Label, dict[str, float]] = collections.defaultdict(
                functools.partial(collections.defaultdict, float))
            for label, e in _per_class(params, "w"):
                weights[label] = collections.defaultdict(float, e.as_dict())
            model.weights = weights
        elif isinstance(model, multiclass.OneVsRestClassifier):
            intercepts = dict(_per_class(params, "b"))
            for label, e in _per_class(params, "w"):
                clf: Any = model.classifiers.get(label)  # (a River linear model)
                if clf is None:
                    clf = model.classifiers[label] = model.classifier.clone()
                clf._weights = utils.VectorDict(e.as_dict())
                b = intercepts.get(label)
                clf.intercept = float(b.values[0]) if b is not None and len(b.values) else 0.0
        else:
            model._weights = utils.VectorDict(params["w"].as_dict()) if "w" in params else utils.VectorDict()
            b = params.get("b")
            model.intercept = float(b.values[0]) if b is not None and len(b.values) else model.intercept


def _nb_params(model: naive_bayes.GaussianNB | naive_bayes.MultinomialNB) -> Params:
    """Naive Bayes's counts: classes, and per class the Gaussians (GaussianNB) or totals and feature counts."""
    out: Params = {"nb.classes": sum_entry({_cls(c): float(n) for c, n in model.class_counts.items()})}
    if isinstance(model, naive_bayes.GaussianNB):
        for label, gaussians in model.gaussians.items():
            rows = {}
            for feature, g in gaussians.items():
                n = float(g._var.mean.n)
                rows[str(feature)] = (n, float(g._var.mean._mean), float(g._var._S) / n if n > 0 else 0.0)
            out[f"nb.gauss/{_cls(label)}"] = moments_entry(rows)
        return out
    out["nb.totals"] = sum_entry({_cls(c): float(n) for c, n in model.class_totals.items()})
    per_class: dict[Label, dict[str, float]] = collections.defaultdict(dict)
    for feature, counts in model.feature_counts.items():
        for label, n in counts.items():
            per_class[label][str(feature)] = float(n)
    for label, counts in per_class.items():
        out[f"nb.counts/{_cls(label)}"] = sum_entry(counts)
    return out


def _load_nb(model: naive_bayes.GaussianNB | naive_bayes.MultinomialNB, params: Params) -> None:
    classes = params.get("nb.classes")
    model.class_counts = collections.Counter(
        {json.loads(k): v for k, v in classes.as_dict().items()} if classes is not None else {})
    if isinstance(model, naive_bayes.GaussianNB):
        model.gaussians.clear()
        for label, e in _per_class(params, "nb.gauss"):
            for feature, (n, mean, var) in e.rows().items():
                g = model._make_gaussian()  # type: ignore[no-untyped-call]  # (population variance)
                g._var.mean.n, g._var.mean._mean, g._var._S = n, mean, var * n
                model.gaussians[label][feature] = g
        return
    totals = params.get("nb.totals")
    model.class_totals = collections.Counter(
        {json.loads(k): v for k, v in totals.as_dict().items()} if totals is not None else {})
    model.feature_counts = collections.defaultdict(collections.Counter)
    for label, e in _per_class(params, "nb.counts"):
        for feature, n in e.as_dict().items():
            model.feature_counts[feature][label] = n


def _per_class(params: Params, prefix: str) -> list[tuple[Label, Entry]]:
    out: list[tuple[Label, Entry]] = []
    for name, e in params.items():
        head, _, label = name.partition("/")
        if head == prefix and label:
            out.append((json.loads(label), e))
    return out


def mergeable_cls(name: str) -> type[RiverLearner]:
    """The River learner class for model ``name``: mergeable for the linear models and naive Bayes."""
    return MergeableRiverLearner if name in MERGEABLE_RIVER else RiverLearner
