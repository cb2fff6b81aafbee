"""Any River estimator by name, built from config: today's short names (``LogisticRegression``) or a dotted
path inside ``river`` (``naive_bayes.MultinomialNB``, ``ensemble.ADWINBaggingClassifier``), checked for the
task, with its parameters checked against its constructor. A parameter may itself be an estimator (or a list
of them), given as ``{name, params}``, and an optimizer as ``{name: SGD, lr: 0.05}``.

Every problem is a `ConfigError` naming the setting and what was wrong.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Mapping
from typing import Any

from driftline.core import Task
from driftline.errors import ConfigError
from driftline.learners.registry import CLASSIFIERS, REGRESSORS, resolve

DOTTED = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*\.[A-Z][A-Za-z0-9_]*")
# River modules whose classes are not online estimators one can name
_NOT_MODELS = {"base", "datasets", "utils", "stats", "metrics", "evaluate", "stream", "optim", "misc"}


def is_dotted(name: str) -> bool:
    return DOTTED.fullmatch(name) is not None


def _kind(cls: type) -> str:
    from river import base

    for kind, parent in (("classifier", base.Classifier), ("regressor", base.Regressor),
                         ("transformer", base.Transformer), ("anomaly detector", base.AnomalyDetector)):
        if issubclass(cls, parent):
            return kind
    return "not an estimator"


def river_class(name: str, *, where: str = "model.name", part: bool = False) -> type:
    """The River class ``name`` names (a short registered name or ``module.Class`` inside ``river``); ``part``:
    a constructor argument of another estimator, which may also come from ``river.stats`` or ``river.optim``
    (``{name: stats.Mean}``)."""
    if name in CLASSIFIERS or name in REGRESSORS:
        cls: type = resolve({**CLASSIFIERS, **REGRESSORS}[name])
        return cls
    if not is_dotted(name):
        raise ConfigError(f"{where}: {name!r} is neither a registered model ({', '.join(sorted(CLASSIFIERS))}, "
                          f"{', '.join(sorted(REGRESSORS))}) nor a River class path such as "
                          "'naive_bayes.MultinomialNB'")
    module, _, attr = name.rpartition(".")
    if module.split(".")[0] in _NOT_MODELS and not (part and module.split(".")[0] in ("stats", "optim")):
        raise ConfigError(f"{where}: river.{module} holds no online models")
    try:
        mod = importlib.import_module(f"river.{module}")
    except ImportError:
        raise ConfigError(f"{where}: {name!r}: there is no module river.{module}") from None
    obj = getattr(mod, attr, None)
    if not isinstance(obj, type):
        from river import base

        known = sorted(n for n in dir(mod) if isinstance(getattr(mod, n), type)
                       and issubclass(getattr(mod, n), base.Estimator))
        raise ConfigError(f"{where}: river.{module} has no class {attr!r}; its estimators: "
                          f"{', '.join(known) or 'none'}")
    return obj


def check_task(cls: type, task: Task, name: str, *, where: str = "model.name") -> None:
    """Raise ConfigError unless ``cls`` is a classifier (classification) or a regressor (regression)."""
    want = "classifier" if task == "classification" else "regressor"
    kind = _kind(cls)
    if kind != want:
        what = f"a {kind}, not a {want}" if kind != "not an estimator" else f"not an estimator (a {want} is needed)"
        raise ConfigError(f"{where}: river {name} is {what} (model.task: {task})")


def build_estimator(name: str, params: Mapping[str, Any], *, task: Task | None, seed: int,
                    where: str = "model") -> Any:
    """``name(**params)``: nested ``{name, params}`` values built first; ``seed`` given where accepted.
    ``task``: the task the estimator must serve (None: nested parts, any River estimator)."""
    cls = river_class(name, where=f"{where}.name", part=task is None)
    if task is not None:
        check_task(cls, task, name, where=f"{where}.name")
    accepted = inspect.signature(cls).parameters
    built: dict[str, Any] = {}
    for key, value in params.items():
        if key not in accepted:
            raise ConfigError(f"{where}.params.{key}: {name} has no parameter {key!r}; accepted: "
                              f"{', '.join(accepted)}")
        built[key] = _value(key, value, seed, f"{where}.params.{key}")
    if "seed" in accepted and "seed" not in built:
        built["seed"] = seed
    try:
        return cls(**built)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.params: {name}({built!r}) failed: {exc}") from exc


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("name"), str) and set(value) <= {"name", "params"}


def _value(key: str, value: Any, seed: int, where: str) -> Any:
    if key == "optimizer" and isinstance(value, Mapping):
        return build_optimizer(dict(value), where)
    if _is_spec(value):
        return build_estimator(value["name"], value.get("params") or {}, task=None, seed=seed, where=where)
    if isinstance(value, list) and value and all(_is_spec(v) for v in value):
        return [build_estimator(v["name"], v.get("params") or {}, task=None, seed=seed + i, where=f"{where}[{i}]")
                for i, v in enumerate(value)]
    return value


def build_optimizer(spec: dict[str, Any], where: str = "model.params.optimizer") -> Any:
    from river import optim

    name = spec.pop("name", "SGD")
    cls = getattr(optim, str(name), None)
    if cls is None or not isinstance(cls, type):
        raise ConfigError(f"{where}.name: unknown River optimizer {name!r}")
    try:
        return cls(**spec)
    except TypeError as exc:
        raise ConfigError(f"{where}: {name}({spec!r}) failed: {exc}") from exc
