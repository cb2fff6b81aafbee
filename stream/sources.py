"""Labeled event sources for `driftline produce`: River bundled datasets, River synthetic
generators (with an optional abrupt drift point), JSONL/CSV files and folders of images.

Each source yields plain event dicts (``{"id", "features", "label", ...}``) that validate as
`driftline.core.Event`.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import numbers
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from driftline.core import Event
from driftline.errors import ConfigError
from driftline.params import construct

EventDict = dict[str, Any]

_SKIP_DATASETS = {"SolarFlare"}  # multi-output targets do not fit one label


def bundled_datasets() -> dict[str, type]:
    """River datasets shipped inside the package (no download), by name."""
    from river import datasets
    from river.datasets import base

    out: dict[str, type] = {}
    for name in dir(datasets):
        obj = getattr(datasets, name)
        if (isinstance(obj, type) and issubclass(obj, base.FileDataset)
                and not issubclass(obj, base.RemoteDataset) and name not in _SKIP_DATASETS):
            out[name] = obj
    return out


def generators() -> dict[str, type]:
    """River synthetic stream generators, by name."""
    from river.datasets import synth

    return {n: getattr(synth, n) for n in dir(synth)
            if n[:1].isupper() and isinstance(getattr(synth, n), type) and n != "ConceptDriftStream"}


def _py(v: Any) -> Any:
    """Plain JSON-able Python value (numpy scalars, bools as features)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return v if isinstance(v, str) else str(v)


def _features(x: Mapping[Any, Any]) -> dict[str, Any]:
    out = {}
    for k, v in x.items():
        if v is None:
            continue
        v = _py(v)
        out[str(k)] = int(v) if isinstance(v, bool) else v
    return out


def _label(y: Any) -> Any:
    return None if y is None else _py(y)


def _stamp(events: Iterator[tuple[dict[str, Any], Any]], id_prefix: str) -> Iterator[EventDict]:
    for i, (x, y) in enumerate(events):
        ev: EventDict = {"id": f"{id_prefix}{i}", "timestamp": dt.datetime.now(dt.UTC).isoformat(),
                         "features": _features(x)}
        label = _label(y)
        if label is not None:
            ev["label"] = label
        yield ev


def from_dataset(name: str, *, id_prefix: str) -> Iterator[EventDict]:
    available = bundled_datasets()
    if name not in available:
        raise ConfigError(f"unknown or not bundled River dataset {name!r}; bundled: {', '.join(sorted(available))}")
    return _stamp(iter(available[name]()), id_prefix)


def _make_generator(cls: type, params: Mapping[str, Any], seed: int) -> Any:
    return construct(cls, params, where="generator parameters", seed=seed)


def from_generator(
    name: str, *, params: Mapping[str, Any] | None = None, seed: int = 42, drift_at: int | None = None,
    drift_params: Mapping[str, Any] | None = None, id_prefix: str,
) -> Iterator[EventDict]:
    """A synthetic stream; with ``drift_at`` it switches abruptly to ``{**params, **drift_params}``.

    Two chained generators make the switch exact (River's ConceptDriftStream with a tiny width
    overflows). The second generator gets ``seed + 1`` so it does not replay the same inputs.
    """
    gens = generators()
    if name not in gens:
        raise ConfigError(f"unknown River generator {name!r}; valid: {', '.join(sorted(gens))}")
    params = dict(params or {})
    first = _make_generator(gens[name], params, seed)
    if drift_at is None:
        return _stamp(iter(first), id_prefix)
    if drift_at < 0:
        raise ConfigError(f"--drift-at must be >= 0, got {drift_at}")
    second = _make_generator(gens[name], {**params, **(drift_params or {})}, seed + 1)
    return _stamp(itertools.chain(itertools.islice(iter(first), drift_at), iter(second)), id_prefix)


def _parse_cell(v: str) -> Any:
    try:
        return int(v)
    except ValueError:
        pass
    try:
        f = float(v)
        return f if f == f and f not in (float("inf"), float("-inf")) else v
    except ValueError:
        return v


def from_file(path: str | Path, *, label_column: str = "label", id_column: str | None = "id",
              id_prefix: str) -> Iterator[EventDict]:
    """JSONL (one event object a line, validated) or CSV (columns -> features)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"input file {str(p)!r} does not exist")
    if p.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return _jsonl(p)
    if p.suffix.lower() == ".csv":
        return _csv(p, label_column, id_column, id_prefix)
    raise ConfigError(f"input file {str(p)!r}: expected a .jsonl or .csv extension")


def _jsonl(p: Path) -> Iterator[EventDict]:
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                Event.model_validate(obj)
            except (json.JSONDecodeError, ValidationError) as exc:
                raise ConfigError(f"{p}:{n}: not a valid event: {exc}") from None
            yield obj


def _csv(p: Path, label_column: str, id_column: str | None, id_prefix: str) -> Iterator[EventDict]:
    with p.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for i, row in enumerate(reader):
            ev: EventDict = {"id": row.pop(id_column) if id_column and row.get(id_column) else f"{id_prefix}{i}"}
            label = row.pop(label_column, None)
            ev["features"] = {k: _parse_cell(v) for k, v in row.items() if k and v not in (None, "")}
            if label not in (None, ""):
                ev["label"] = _parse_cell(label)
            yield ev


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def from_images(directory: str | Path, *, id_prefix: str, seed: int | None = None) -> Iterator[EventDict]:
    """A folder of images, one sub-folder per class (as torchvision's ImageFolder): ``DIR/<label>/<file>``.
    Each image (PNG, JPEG, WebP) becomes an ``image`` event carrying the file's bytes as they are, labeled
    with its sub-folder's name (an integer name gives an integer label); the id is the file's path relative
    to DIR. Files are read in sorted order, or shuffled with ``seed``. Other files are skipped."""
    import base64
    import random

    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"--images: {str(root)!r} is not a directory")
    files = sorted(f for f in root.glob("*/*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"--images: {str(root)!r} has no sub-folder holding .png/.jpg/.jpeg/.webp files "
                          "(expected DIR/<label>/<image file>)")
    if seed is not None:
        random.Random(seed).shuffle(files)
    for f in files:
        label = f.parent.name
        yield {"id": f"{id_prefix}{f.relative_to(root).as_posix()}",
               "image": base64.b64encode(f.read_bytes()).decode("ascii"),
               "label": int(label) if label.isdecimal() else label}
