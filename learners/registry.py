"""Names of the River models a config may choose, mapped to their import paths.

Kept free of heavy imports so settings validation can list valid names cheaply.
"""

from __future__ import annotations

import importlib
from typing import Any

CLASSIFIERS: dict[str, str] = {
    "LogisticRegression": "river.linear_model:LogisticRegression",
    "SoftmaxRegression": "river.linear_model:SoftmaxRegression",
    "Perceptron": "river.linear_model:Perceptron",
    "GaussianNB": "river.naive_bayes:GaussianNB",
    "HoeffdingTreeClassifier": "river.tree:HoeffdingTreeClassifier",
    "HoeffdingAdaptiveTreeClassifier": "river.tree:HoeffdingAdaptiveTreeClassifier",
    "ARFClassifier": "river.forest:ARFClassifier",
    # batch-incremental: a CART tree refit on a sliding window (driftline.learners.windowed)
    "WindowedTreeClassifier": "driftline.learners.windowed:WindowedTreeClassifier",
}

REGRESSORS: dict[str, str] = {
    "LinearRegression": "river.linear_model:LinearRegression",
    "HoeffdingTreeRegressor": "river.tree:HoeffdingTreeRegressor",
    "HoeffdingAdaptiveTreeRegressor": "river.tree:HoeffdingAdaptiveTreeRegressor",
    "ARFRegressor": "river.forest:ARFRegressor",
}

# River models whose parameters members of a group can average (sync.mode average; driftline.learners.river_sync)
MERGEABLE_RIVER: frozenset[str] = frozenset({"LogisticRegression", "Perceptron", "LinearRegression",
                                             "SoftmaxRegression", "GaussianNB", "naive_bayes.GaussianNB",
                                             "naive_bayes.MultinomialNB"})

# Torch heads (trained online with a torch optimizer; see driftline.learners.torch_head).
TORCH_HEADS: dict[str, str] = {
    "TorchLinear": "driftline.learners.torch_head:TorchLinear",
    "TorchMLP": "driftline.learners.torch_head:TorchMLP",
}


# The deep continual learner (Avalanche strategies in windows; see driftline.learners.continual).
CONTINUAL: dict[str, str] = {
    "Continual": "driftline.learners.continual:ContinualLearner",
}


def resolve(path: str) -> Any:
    """Import ``module:attr``."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
