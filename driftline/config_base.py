"""The base of every settings model (frozen, unknown keys rejected) and shared validation helpers."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, SecretStr


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def one_of(owner: str, value: SecretStr | None, file: str | None, name: str, *, required: bool) -> None:
    if value is not None and file is not None:
        raise ValueError(f"{owner}: set {name} or {name}_file, not both")
    if required and value is None and file is None:
        raise ValueError(f"{owner}: {name} (or {name}_file) is required")




def registered(what: str, registry: Mapping[str, object], name: str) -> str:
    """``name`` if ``registry`` has it, else a ValueError listing the valid names (an extension point's
    registry is the one list of what a config may name)."""
    if name not in registry:
        raise ValueError(f"unknown {what} {name!r}; valid: {', '.join(registry)}")
    return name
