"""User parameters into objects, with clear errors: library constructors (River generator, detector, ...)
and our own pydantic parameter models (heads, strategies, policies)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from driftline.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], params: Mapping[str, Any], *, where: str, name: str) -> M:
    """``params`` as ``model``; a ConfigError has one line per problem: ``where.key: message (valid for name:
    the accepted keys)``."""
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        valid = ", ".join(model.model_fields) or "none"
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{where}.{loc}: {msg} (valid for {name}: {valid})")
        raise ConfigError("\n".join(lines)) from None


def construct(cls: Any, params: Mapping[str, Any], *, where: str, seed: int | None = None) -> Any:
    """``cls(**params)`` (plus ``seed`` when ``cls`` takes one and it is not given). Unknown parameters,
    and a constructor that rejects the values, are a ConfigError naming ``where`` and what is accepted."""
    accepted = inspect.signature(cls).parameters
    bad = [k for k in params if k not in accepted]
    name = getattr(cls, "__name__", str(cls))
    if bad:
        raise ConfigError(f"{where}: {name} has no parameter(s) {bad}; accepted: {', '.join(accepted)}")
    kwargs = dict(params)
    if seed is not None and "seed" in accepted:
        kwargs.setdefault("seed", seed)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {name}({kwargs}) failed: {exc}") from None
