"""Crash-loop guard: a record that kills the process (a segfault in native code, an abort, the kernel's OOM
killer) is quarantined instead of killing every restart.

Exceptions are caught per record (`processor`, `routing`); this is the second line of defence, for deaths no
``except`` sees. Before each batch the run loop writes a marker (``inflight.json`` in the checkpoint
directory): which offsets of which partitions are in hand. A clean stop removes it. On start a marker left
behind means the last process died with that batch in hand, or was simply killed: its records are then
processed one at a time, the marker naming the record in hand. Dying with a record in hand this way is a
strike against *that* record; it is tried on its own once more, and a second strike condemns it: the next
start dead-letters it (``quarantined``) instead of processing it. So a poison record costs three deaths, and
plain SIGKILLs or broker outages quarantine nothing: one would have to land twice while the same record is in
hand (a test that killed a member three times in a row once hit a record on its own with the second kill).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)

MARKER = "inflight.json"
KEEP_CONDEMNED = 1000
QUARANTINED = "quarantined"
STRIKES = 2  # deaths with a record in hand, on its own, that condemn it

Coordinates = tuple[str, int, int]  # topic, partition, offset


class Quarantine:
    """The marker file and what it said at start. Without a directory it does nothing."""

    def __init__(self, directory: str | None) -> None:
        self.path = Path(directory) / MARKER if directory is not None else None
        self.suspect: dict[tuple[str, int], tuple[int, int]] = {}  # partition -> (first, last) offsets
        self.condemned: set[Coordinates] = set()  # records a process died with in hand, on their own, twice
        self.strikes: dict[Coordinates, int] = {}  # records a process died with in hand once, on their own
        self._kept: list[list[Any]] = []  # the condemned records the marker carries on (set at start)
        self._struck: list[list[Any]] = []  # the strikes it carries on
        self._fd: int | None = None

    def start(self) -> None:
        """Read what a process that died left behind."""
        if self.path is None or not self.path.exists():
            return
        try:
            marker: dict[str, Any] = json.loads(self.path.read_text())
            self.suspect = {(t, int(p)): (int(a), int(b)) for t, p, a, b in marker.get("batch", [])}
            self.condemned = {(t, int(p), int(o)) for t, p, o in marker.get("condemned", [])}
            self.strikes = {(t, int(p), int(o)): int(n) for t, p, o, n in marker.get("strikes", [])}
            record = marker.get("record")
        except (OSError, ValueError, TypeError) as exc:  # torn by the death itself: start without it
            log.warning("quarantine: unreadable marker %s (%s); ignored", self.path, exc)
            return
        if record is not None:
            t, p, o = record
            key = (t, int(p), int(o))
            self.strikes[key] = self.strikes.get(key, 0) + 1
            if self.strikes[key] >= STRIKES:
                self.condemned.add(key)
                del self.strikes[key]
                log.error("quarantine: a process died while handling the record at %s-%s offset %s on its own, for "
                          "the %s time; it will be dead-lettered (%s), not processed again", t, p, o,
                          _ordinal(STRIKES), QUARANTINED)
            else:
                log.warning("quarantine: the last process died while handling the record at %s-%s offset %s on its "
                            "own; it is tried once more on its own (a second death with it in hand dead-letters it)",
                            t, p, o)
        else:
            log.warning("quarantine: the last process stopped with a batch in hand (%s); those records are "
                        "processed one at a time this time", self._describe())
        self._kept = sorted([list(c) for c in self.condemned])[-KEEP_CONDEMNED:]
        self._struck = sorted([[*c, n] for c, n in self.strikes.items()])[-KEEP_CONDEMNED:]

    def _describe(self) -> str:
        return ", ".join(f"{t}-{p} offsets {a}..{b}" for (t, p), (a, b) in sorted(self.suspect.items()))

    def careful(self, records: Sequence[InboundRecord]) -> bool:
        """Whether this batch holds a record the last process may have died on (process it one at a time)."""
        suspect = self.suspect
        if not suspect:
            return False
        for r in records:
            span = suspect.get((r.topic, r.partition))
            if span is not None and span[0] <= r.offset <= span[1]:
                return True
        return False

    def is_condemned(self, record: InboundRecord) -> bool:
        return (record.topic, record.partition, record.offset) in self.condemned

    def batch_begins(self, records: Sequence[InboundRecord]) -> None:
        if self.path is None:
            return
        spans: dict[tuple[str, int], list[int]] = {}
        for r in records:
            span = spans.setdefault((r.topic, r.partition), [r.offset, r.offset])
            span[1] = r.offset
        self._write({"batch": [[t, p, a, b] for (t, p), (a, b) in spans.items()], "record": None})

    def record_begins(self, record: InboundRecord) -> None:
        """Careful mode: the record about to be handled on its own."""
        if self.path is None:
            return
        self._write({"batch": [[t, p, a, b] for (t, p), (a, b) in self.suspect.items()],
                     "record": [record.topic, record.partition, record.offset]})

    def records_done(self) -> None:
        """Careful mode: every record of the batch was handled; none is in hand any more (a death from here on,
        e.g. a SIGKILL while the service waits for the next batch, must not condemn the last one)."""
        if self.path is None:
            return
        self._write({"batch": [[t, p, a, b] for (t, p), (a, b) in self.suspect.items()], "record": None})

    def _write(self, marker: dict[str, Any]) -> None:
        """Overwrite the marker in place (~6 us here, against ~200 us for a new file renamed over it: this runs
        before every batch). A death between the write and the truncation leaves it unreadable, which the next
        start ignores; a record's death never lands there, it happens while the record is processed."""
        assert self.path is not None
        marker["condemned"] = self._kept
        marker["strikes"] = self._struck
        data = json.dumps(marker).encode()
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            os.pwrite(self._fd, data, 0)
            os.ftruncate(self._fd, len(data))
        except OSError as exc:  # the guard is a second line of defence: it must not stop the service itself
            log.warning("quarantine: cannot write %s (%s); the crash-loop guard is off for this run", self.path, exc)
            self.path = None

    def clean_stop(self) -> None:
        """Nothing is in hand any more; condemned records stay condemned (a checkpoint may be older than them)."""
        if self.path is None:
            return
        if self.condemned or self.strikes:
            self._write({"batch": [], "record": None})
        else:
            self.path.unlink(missing_ok=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third"}.get(n, f"{n}th")
