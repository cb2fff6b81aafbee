"""Checkpoints: the whole learning state saved together with the Kafka offsets it reflects.

A checkpoint file is one JSON header line followed by the pickled state::

    {"format": "driftline.checkpoint/1", "version": 7, "created_at": ..., "sha256": ..., "size": ...,
     "offsets": {"topic": {"0": 1234}}, "learned": 5000}\n<pickle bytes>

`DirectoryStore` writes atomically (temp file, fsync, rename, fsync the directory), keeps the last
K checkpoints, and on load skips a corrupt or truncated newest one (checksum mismatch) in favour of
the previous one, loudly. `CheckpointStore` is the interface an object store would implement.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from driftline.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "driftline.checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d{12})\.bin$")

Offsets = dict[str, dict[int, int]]  # topic -> partition -> next offset to consume


class CheckpointError(Exception):
    """A checkpoint could not be read (corrupt, truncated, unknown format)."""


@dataclass(frozen=True)
class CheckpointInfo:
    version: int
    created_at: float
    offsets: Offsets
    learned: int
    size: int
    location: str
    extra: Mapping[str, Any] = field(default_factory=dict)


class CheckpointStore(Protocol):
    def save(self, state: Mapping[str, Any], offsets: Offsets, *, learned: int) -> CheckpointInfo: ...

    def list(self) -> list[CheckpointInfo]: ...

    def load(self, version: int | None = None) -> tuple[CheckpointInfo, dict[str, Any]] | None: ...

    def rollback(self, version: int) -> CheckpointInfo: ...


def _encode_offsets(offsets: Offsets) -> dict[str, dict[str, int]]:
    return {t: {str(p): int(o) for p, o in parts.items()} for t, parts in offsets.items()}


def _decode_offsets(raw: Mapping[str, Mapping[str, int]]) -> Offsets:
    return {t: {int(p): int(o) for p, o in parts.items()} for t, parts in raw.items()}


def _atomic_write(final: Path, header: Mapping[str, Any], payload: bytes) -> None:
    """Header line + payload to ``final``: temp file, fsync, rename, fsync the directory."""
    tmp = final.parent / f".{final.name}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


MODEL_FORMAT = "driftline.model/1"


def write_model_file(path: str | Path, state: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """A learner state as one checksummed file (what `driftline pretrain` writes and
    ``model.start_from`` reads); written atomically."""
    payload = pickle.dumps(dict(state), protocol=pickle.HIGHEST_PROTOCOL)
    header = {"format": MODEL_FORMAT, "created_at": time.time(), "sha256": hashlib.sha256(payload).hexdigest(),
              "size": len(payload), "meta": dict(meta)}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(p, header, payload)
    return p


def read_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(meta, state) of a model file; CheckpointError names the file and what is wrong with it."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read pretrained model file {str(p)!r}: {exc.strerror}") from None
    line, _, payload = data.partition(b"\n")
    try:
        header = json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{str(p)!r} is not a driftline model file ({MODEL_FORMAT}; "
                              "written by `driftline pretrain`)")
    if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"{str(p)!r} is truncated or corrupt (size/checksum mismatch)")
    try:
        state = pickle.loads(payload)
    except Exception as exc:
        raise CheckpointError(f"{str(p)!r}: cannot unpickle the state: {exc}") from None
    return dict(header.get("meta") or {}), state


class DirectoryStore:
    """Checkpoints as files in one directory (a local disk or a mounted volume)."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.directory = Path(directory)
        self.keep = keep
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only filesystem, a volume owned by another user, ...
            raise ConfigError(f"checkpoint.directory: cannot create {str(self.directory)!r}: {exc.strerror} (mount a "
                              "writable volume there, or point checkpoint.directory at one)") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise ConfigError(f"checkpoint.directory: {str(self.directory)!r} is not writable by this user "
                              f"(uid {os.getuid()})")
        self.corrupt_skipped = 0  # how many unreadable checkpoints load() passed over

    def _files(self) -> list[tuple[int, Path]]:
        out = []
        for p in self.directory.iterdir():
            m = _NAME.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def _next_version(self) -> int:
        files = self._files()
        return files[-1][0] + 1 if files else 1

    def save(self, state: Mapping[str, Any], offsets: Offsets, *, learned: int,
             extra: Mapping[str, Any] | None = None) -> CheckpointInfo:
        payload = pickle.dumps(dict(state), protocol=pickle.HIGHEST_PROTOCOL)
        version = self._next_version()
        header = {
            "format": FORMAT, "version": version, "created_at": time.time(),
            "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload),
            "offsets": _encode_offsets(offsets), "learned": int(learned), "extra": dict(extra or {}),
        }
        final = self.directory / f"ckpt-{version:012d}.bin"
        _atomic_write(final, header, payload)
        self._prune()
        return self._info(header, final)

    def _prune(self) -> None:
        files = self._files()
        for _, p in files[: max(len(files) - self.keep, 0)]:
            p.unlink(missing_ok=True)

    @staticmethod
    def _info(header: Mapping[str, Any], path: Path) -> CheckpointInfo:
        return CheckpointInfo(
            version=int(header["version"]), created_at=float(header["created_at"]),
            offsets=_decode_offsets(header["offsets"]), learned=int(header["learned"]),
            size=int(header["size"]), location=str(path), extra=header.get("extra", {}),
        )

    def _read(self, path: Path, *, verify: bool) -> tuple[CheckpointInfo, bytes]:
        try:
            data = path.read_bytes()
            line, _, payload = data.partition(b"\n")
            header = json.loads(line)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable header: {exc}") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a {FORMAT} file")
        if verify:
            if len(payload) != header.get("size"):
                raise CheckpointError(f"{path}: truncated: {len(payload)} of {header.get('size')} bytes")
            if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
                raise CheckpointError(f"{path}: checksum mismatch (corrupt)")
        return self._info(header, path), payload

    def list(self) -> list[CheckpointInfo]:
        """Every checkpoint whose header reads, oldest first (payloads are not verified here)."""
        out = []
        for _, p in self._files():
            try:
                out.append(self._read(p, verify=False)[0])
            except CheckpointError as exc:
                log.warning("%s", exc)
        return out

    def load(self, version: int | None = None) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """The newest valid checkpoint (or exactly ``version``); None if there is none."""
        files = self._files()
        if version is not None:
            files = [(v, p) for v, p in files if v == version]
            if not files:
                raise CheckpointError(f"no checkpoint version {version} in {self.directory}")
        for _, path in reversed(files):
            try:
                info, payload = self._read(path, verify=True)
                return info, pickle.loads(payload)
            except (CheckpointError, pickle.UnpicklingError, EOFError) as exc:
                if version is not None:
                    raise CheckpointError(str(exc)) from None
                self.corrupt_skipped += 1
                log.error("CHECKPOINT SKIPPED: %s; falling back to the previous checkpoint", exc)
        return None

    def rollback(self, version: int) -> CheckpointInfo:
        """Make ``version`` the newest: later checkpoints are moved aside (renamed ``.rolled-back``)."""
        loaded = self.load(version)  # raises CheckpointError if that version is missing or unreadable
        assert loaded is not None
        info = loaded[0]
        for v, p in self._files():
            if v > version:
                os.replace(p, p.with_name(p.name + ".rolled-back"))
        return info
