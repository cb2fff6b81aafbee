"""Model parameters as data (named, keyed float64 vectors) and the arithmetic of merging them across the members
of a group (`driftline.stream.sync`): weighted averages for parameters, exact combination for statistics.

Two kinds of entry:

- ``MEAN``: model parameters (a linear model's weights and intercept). A round's merged value is the mean of the
  members' values weighted by the labeled events each learned since the last round (federated averaging). A key
  a member does not have counts as 0 there (River's linear models start every weight at 0).
- ``SUM``: counts (naive Bayes's per-class and per-feature counts). A member sends what it counted since the merged
  model it last adopted; the merged value is the previous one plus every contribution: exactly the counts of all
  the events the group learned.
- ``MOMENTS``: running statistics as (count, mean, variance) per key (the scaler's). A member sends what it
  learned since the merged model it last adopted (its *contribution*); the merged value is the previous merged
  value combined with every contribution (Chan et al.'s parallel update): exactly the statistics of all the
  events the group learned, in any order.

Everything here is deterministic: keys are sorted, sums run in member order, so every member computes the same
bits from the same updates (`digest` is identical on every member).
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

MEAN: Literal["mean"] = "mean"
MOMENTS: Literal["moments"] = "moments"
SUM: Literal["sum"] = "sum"
EntryKind = Literal["mean", "moments", "sum"]

Vector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Entry:
    """One named parameter: ``values[i]`` belongs to ``keys[i]``; shape (n,) for MEAN and SUM, (n, 3) = (count,
    mean, variance) for MOMENTS. Keys are sorted and unique."""

    kind: EntryKind
    keys: tuple[str, ...]
    values: Vector

    def as_dict(self) -> dict[str, float]:
        """MEAN and SUM entries: key -> value."""
        return dict(zip(self.keys, (float(v) for v in self.values), strict=True))

    def rows(self) -> dict[str, tuple[float, float, float]]:
        """MOMENTS entries: key -> (count, mean, variance)."""
        return {k: (float(r[0]), float(r[1]), float(r[2])) for k, r in zip(self.keys, self.values, strict=True)}


Params = dict[str, Entry]


@functools.lru_cache(maxsize=256)
def positions(n: int) -> tuple[str, ...]:
    """The keys of a vector's positions 0..n-1 (zero-padded: sorted in position order); one tuple per size. A
    network's tensors are keyed so, and travel without their keys (the manifest says ``positions``)."""
    return tuple(f"{i:09d}" for i in range(n))


def mean_entry(values: Mapping[str, float]) -> Entry:
    keys = tuple(sorted(values))
    return Entry(MEAN, keys, np.array([values[k] for k in keys], dtype=np.float64))


def sum_entry(values: Mapping[str, float]) -> Entry:
    keys = tuple(sorted(values))
    return Entry(SUM, keys, np.array([values[k] for k in keys], dtype=np.float64))


def moments_entry(rows: Mapping[str, tuple[float, float, float]]) -> Entry:
    keys = tuple(sorted(rows))
    data = np.array([rows[k] for k in keys], dtype=np.float64).reshape(len(keys), 3)
    return Entry(MOMENTS, keys, data)


def _aligned(entries: Sequence[Entry]) -> tuple[tuple[str, ...], list[Vector]]:
    """The union of the entries' keys (sorted), and each entry's values on it (absent keys: 0)."""
    first = entries[0].keys
    if all(e.keys == first for e in entries[1:]):  # the same keys (a network's tensors, a settled model): as they are
        return first, [e.values for e in entries]
    keys = tuple(sorted(set().union(*(e.keys for e in entries))))
    where = {k: i for i, k in enumerate(keys)}
    out: list[Vector] = []
    for e in entries:
        shape = (len(keys), *e.values.shape[1:])
        full = np.zeros(shape, dtype=np.float64)
        if e.keys:
            full[[where[k] for k in e.keys]] = e.values
        out.append(full)
    return keys, out


def _combine(a: Vector, b: Vector) -> Vector:
    """Rows of (count, mean, variance) of two disjoint samples -> those of their union (population variance)."""
    na, ma, va = a[:, 0], a[:, 1], a[:, 2]
    nb, mb, vb = b[:, 0], b[:, 1], b[:, 2]
    n = na + nb
    safe = np.where(n > 0, n, 1.0)
    delta = mb - ma
    mean = np.where(n > 0, ma + delta * nb / safe, 0.0)
    m2 = va * na + vb * nb + delta * delta * na * nb / safe
    var = np.where(n > 0, m2 / safe, 0.0)
    return np.stack([n, mean, var], axis=1)


def _subtract(total: Vector, part: Vector) -> Vector:
    """Rows of the sample ``total`` minus its sub-sample ``part`` (the inverse of `_combine`)."""
    nt, mt, vt = total[:, 0], total[:, 1], total[:, 2]
    npart, mp, vp = part[:, 0], part[:, 1], part[:, 2]
    n = nt - npart
    safe = np.where(n > 0, n, 1.0)
    mean = np.where(n > 0, (nt * mt - npart * mp) / safe, 0.0)
    delta = mean - mp
    m2 = vt * nt - vp * npart - delta * delta * npart * n / np.where(nt > 0, nt, 1.0)
    var = np.where(n > 0, np.maximum(m2, 0.0) / safe, 0.0)
    return np.stack([np.maximum(n, 0.0), mean, var], axis=1)


def contribution(now: Params, base: Params) -> Params:
    """What a member sends for a round: MEAN entries as they are now, MOMENTS and SUM entries minus the merged model
    it last adopted (``base``): the statistics and counts of the events it learned since."""
    out: Params = {}
    for name, e in now.items():
        b = base.get(name)
        if e.kind == MEAN or b is None:
            out[name] = e
            continue
        keys, (v, bv) = _aligned([e, b])
        out[name] = Entry(e.kind, keys, v - bv if e.kind == SUM else _subtract(v, bv))
    return out


def merge(previous: Params, updates: Sequence[tuple[float, Params]]) -> Params:
    """The round's merged model from the members' contributions (in member order) and their weights (labeled
    events learned since the last round; all zero: equal weights). MEAN: weighted mean; MOMENTS: ``previous``
    combined with every contribution; SUM: ``previous`` plus every contribution."""
    if not updates:
        return dict(previous)
    weights = np.array([max(w, 0.0) for w, _ in updates], dtype=np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    weights = weights / weights.sum()
    names = sorted(set().union(*(p.keys() for _, p in updates)))
    out: Params = {}
    for name in names:
        present = [(w, p[name]) for w, (_, p) in zip(weights, updates, strict=True) if name in p]
        kind = present[0][1].kind
        if any(e.kind != kind for _, e in present):
            raise ValueError(f"parameter {name!r} is {kind} for one member and not for another")
        if kind == MEAN:
            keys, vals = _aligned([e for _, e in present])
            total = np.zeros(len(keys), dtype=np.float64)
            share = sum(float(w) for w, _ in present)
            for (w, _), v in zip(present, vals, strict=True):
                total += (float(w) / share) * v
            out[name] = Entry(MEAN, keys, total)
        else:
            parts = [e for _, e in present]
            prev = previous.get(name)
            if prev is not None:
                parts.insert(0, prev)
            keys, vals = _aligned(parts)
            acc = vals[0]
            for v in vals[1:]:
                acc = acc + v if kind == SUM else _combine(acc, v)
            out[name] = Entry(kind, keys, acc)
    return out


def rebase(merged: Params, now: Params, ref: Params) -> Params:
    """A member's model after adopting ``merged``: the merged model plus what it learned since ``ref`` (the
    values it sent, when its update was in the round; else the merged model it adopted before), which the group
    has not seen yet. MEAN and SUM: merged + (now - ref); MOMENTS: merged combined with (now minus ref)."""
    out: Params = {}
    for name in sorted(set(merged) | set(now)):
        m, n, r = merged.get(name), now.get(name), ref.get(name)
        if n is None:
            assert m is not None
            out[name] = m
            continue
        if m is None:
            out[name] = n
            continue
        parts = [m, n] + ([r] if r is not None else [])
        keys, vals = _aligned(parts)
        mv, nv = vals[0], vals[1]
        rv = vals[2] if r is not None else np.zeros_like(nv)
        if m.kind in (MEAN, SUM):
            out[name] = Entry(m.kind, keys, mv + (nv - rv))
        else:
            out[name] = Entry(MOMENTS, keys, _combine(mv, _subtract(nv, rv)))
    return out


def digest(params: Params) -> str:
    """sha256 of the parameters' canonical bytes: equal on every member that holds the same model."""
    h = hashlib.sha256()
    for name in sorted(params):
        e = params[name]
        keys = len(e.keys) if e.keys == positions(len(e.keys)) else list(e.keys)  # (as on the wire)
        h.update(json.dumps([name, e.kind, keys]).encode())
        h.update(np.ascontiguousarray(e.values, dtype="<f8").tobytes())
    return h.hexdigest()


# -- a data-only wire format: a JSON header and raw little-endian float64 arrays (nothing executable) --------
MAGIC = b"DLSYNC"
FORMAT = 1


class FormatError(ValueError):
    """A sync payload that is not one (or not of a format version this build reads)."""


def encode(header: Mapping[str, object], params: Params | None) -> bytes:
    """``MAGIC``, format byte, header length (4 bytes), the JSON header (with the array manifest), the arrays."""
    manifest: list[dict[str, object]] = []
    blobs: list[bytes] = []
    for name in sorted(params or {}):
        e = (params or {})[name]
        data = np.ascontiguousarray(e.values, dtype="<f8").tobytes()
        keyed: dict[str, object] = ({"positions": len(e.keys)} if e.keys == positions(len(e.keys))
                                    else {"keys": list(e.keys)})
        manifest.append({"name": name, "kind": e.kind, **keyed, "shape": list(e.values.shape), "bytes": len(data)})
        blobs.append(data)
    head = json.dumps({**header, "arrays": manifest if params is not None else None},
                      separators=(",", ":")).encode()
    return MAGIC + bytes([FORMAT]) + struct.pack(">I", len(head)) + head + b"".join(blobs)


def decode(payload: bytes) -> tuple[dict[str, Any], Params | None]:
    """The header and parameters of an `encode`d payload; FormatError naming what is wrong."""
    if len(payload) < len(MAGIC) + 5 or not payload.startswith(MAGIC):
        raise FormatError("not a driftline sync record (no DLSYNC header)")
    version = payload[len(MAGIC)]
    if version != FORMAT:
        raise FormatError(f"sync record format {version}; this driftline reads format {FORMAT}")
    (size,) = struct.unpack(">I", payload[len(MAGIC) + 1:len(MAGIC) + 5])
    start = len(MAGIC) + 5
    try:
        header = json.loads(payload[start:start + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"sync record header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError("sync record header is not an object")
    arrays = header.pop("arrays", None)
    if arrays is None:
        return header, None
    pos = start + size
    params: Params = {}
    try:
        for a in arrays:
            n = int(a["bytes"])
            shape = tuple(int(d) for d in a["shape"])
            kind = a["kind"]
            keys = (positions(int(a["positions"])) if "positions" in a
                    else tuple(str(k) for k in a["keys"]))
            if kind not in (MEAN, MOMENTS, SUM) or len(payload) < pos + n:
                raise FormatError(f"sync record array {a.get('name')!r} is truncated or of unknown kind {kind!r}")
            values = np.frombuffer(payload, dtype="<f8", count=n // 8, offset=pos).astype(np.float64).reshape(shape)
            if values.shape[0] != len(keys) or values.shape[1:] != ((3,) if kind == MOMENTS else ()):
                raise FormatError(f"sync record array {a['name']!r}: shape {shape} does not fit {len(keys)} keys")
            params[str(a["name"])] = Entry(kind, keys, values)
            pos += n
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"sync record array manifest is malformed: {exc}") from None
    if pos != len(payload):
        raise FormatError(f"sync record has {len(payload) - pos} bytes after its arrays")
    return header, params
