from __future__ import annotations

import logging
from pathlib import Path

import pytest

from driftline.learners.checkpoint import CheckpointError, DirectoryStore


def _save(store: DirectoryStore, n: int) -> None:
    store.save({"n": n, "blob": b"x" * 100}, {"in": {0: n * 10, 1: n}}, learned=n)


def test_round_trip_with_offsets(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path)
    assert store.load() is None
    _save(store, 1)
    info, state = store.load()  # type: ignore[misc]
    assert state == {"n": 1, "blob": b"x" * 100}
    assert info.version == 1 and info.offsets == {"in": {0: 10, 1: 1}} and info.learned == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000001.bin"]  # no temp file left


def test_keeps_the_last_k(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path, keep=3)
    for n in range(1, 7):
        _save(store, n)
    assert [i.version for i in store.list()] == [4, 5, 6]
    assert store.load()[1]["n"] == 6  # type: ignore[index]


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_corrupt_newest_falls_back_loudly(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    store = DirectoryStore(tmp_path)
    _save(store, 1)
    _save(store, 2)
    newest = tmp_path / "ckpt-000000000002.bin"
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[-5] ^= 0xFF
    elif damage == "truncate":
        data = data[:-20]
    else:
        data[:5] = b"garba"
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        info, state = store.load()  # type: ignore[misc]
    assert info.version == 1 and state["n"] == 1
    assert store.corrupt_skipped == 1
    assert "CHECKPOINT SKIPPED" in caplog.text and "ckpt-000000000002.bin" in caplog.text
    with pytest.raises(CheckpointError):
        store.load(2)


def test_rollback_makes_a_version_newest(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path, keep=5)
    for n in range(1, 5):
        _save(store, n)
    info = store.rollback(2)
    assert info.version == 2
    assert [i.version for i in store.list()] == [1, 2]
    assert store.load()[1]["n"] == 2  # type: ignore[index]
    _save(store, 9)  # the next checkpoint continues after the rolled-back one
    assert [i.version for i in store.list()] == [1, 2, 3]
    assert sorted(p.name for p in tmp_path.glob("*.rolled-back")) == [
        "ckpt-000000000003.bin.rolled-back", "ckpt-000000000004.bin.rolled-back"]
    with pytest.raises(CheckpointError, match="no checkpoint version 42"):
        store.rollback(42)


def test_a_checkpoint_directory_that_cannot_be_written_is_a_config_error(tmp_path: Path) -> None:
    import os

    from driftline.errors import ConfigError

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.getuid() == 0:  # root writes anywhere: a path under a file cannot be created by anyone
        (tmp_path / "file").write_text("x")
        with pytest.raises(ConfigError, match=r"checkpoint.directory: cannot create .*file/ckpt"):
            DirectoryStore(tmp_path / "file" / "ckpt")
    else:
        with pytest.raises(ConfigError, match=r"cannot create|is not writable"):
            DirectoryStore(locked / "ckpt")
