"""Build a library object (River generator, detector, ...) from user parameters, with clear errors."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from driftline.errors import ConfigError


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
