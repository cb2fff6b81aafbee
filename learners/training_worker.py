"""Micro-batch windows trained off the poll loop, with back-pressure instead of an unbounded queue.

Labeled examples accumulate in an open window; it is sealed when it holds ``window_events`` examples or
has been open ``window_seconds``. Sealed windows wait (at most ``max_pending``) for the worker thread,
which trains them one at a time (``train_fn``). When ``max_pending`` windows wait and the open one is
full, `saturated` is true: the run loop pauses its partitions (it keeps polling, so the group keeps it)
until the worker catches up. In synchronous mode (replay, pretraining, tests) a sealed window is trained
at once in the caller's thread, so results do not depend on timing.

`train_lock` is held while a window trains: a state snapshot taken under it sees every window either
trained or pending, never half of one. So that a step under it (a snapshot, the group's update or merge) does not
wait for a window in training, the poll loop asks `between_windows` first: false, the step is put off, and the
worker starts no new window after the one in training until the step is done (`release`) or ``hold_seconds``
pass; the loop's next ask finds it between windows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Window:
    xs: list[Any] = field(default_factory=list)  # model inputs (tensors on the CPU)
    ys: list[int] = field(default_factory=list)  # class indices
    opened: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.ys)


class TrainingError(RuntimeError):
    """Training a window failed in the worker thread; raised in the thread that feeds it."""


class TrainingWorker:
    def __init__(self, train_fn: Callable[[Window], None], *, window_events: int, window_seconds: float,
                 max_pending: int, synchronous: bool = False, name: str = "driftline-trainer",
                 hold_seconds: float = 5.0) -> None:
        self.train_fn = train_fn
        self.window_events, self.window_seconds, self.max_pending = window_events, window_seconds, max_pending
        self.synchronous = synchronous
        self.train_lock = threading.Lock()
        self._cv = threading.Condition()
        self._open: Window | None = None
        self._sealed: deque[Window] = deque()
        self._inflight: Window | None = None
        self._error: BaseException | None = None
        self._stop = False
        self._thread: threading.Thread | None = None
        self._name = name
        self.hold_seconds = hold_seconds
        self._hold_until: float | None = None  # no new window starts before this (monotonic), or release()
        self.trained_windows = 0

    # -- feeding (the poll loop's thread) -----------------------------------------------------------
    def add(self, x: Any, y: int) -> None:
        self._raise_if_failed()
        with self._cv:
            if self._open is None:
                self._open = Window()
            self._open.xs.append(x)
            self._open.ys.append(y)
            full = len(self._open) >= self.window_events
            if full and (self.synchronous or len(self._sealed) < self.max_pending):
                self._seal_locked()
        if self.synchronous:
            self._train_pending_here()
        else:
            self._ensure_thread()

    def _seal_locked(self) -> None:
        assert self._open is not None
        self._sealed.append(self._open)
        self._open = None
        self._cv.notify_all()

    def saturated(self) -> bool:
        """True when the worker is behind: the pending windows are at their bound and the open one is full."""
        with self._cv:
            return (len(self._sealed) >= self.max_pending and self._open is not None
                    and len(self._open) >= self.window_events)

    def backlog(self) -> int:
        """Windows sealed and not yet trained (the one training included)."""
        with self._cv:
            return len(self._sealed) + (self._inflight is not None)

    def buffered(self) -> int:
        """Examples not yet trained on."""
        with self._cv:
            return sum(len(w) for w in self._windows_locked())

    # -- snapshots between windows -------------------------------------------------------------------
    def between_windows(self) -> bool:
        """Whether no window is in training now (a snapshot under `train_lock` would not wait). Either way the
        worker starts no new window until `release` or ``hold_seconds`` pass: asked again after the window in
        training ends, the answer is true."""
        with self._cv:
            self._hold_until = time.monotonic() + self.hold_seconds
            return self._inflight is None

    def release(self) -> None:
        """The step `between_windows` held the worker for is done (or not wanted): windows train again."""
        with self._cv:
            if self._hold_until is not None:
                self._hold_until = None
                self._cv.notify_all()

    def _held_locked(self) -> float:
        """Seconds the hold lasts still (0: none)."""
        if self._hold_until is None:
            return 0.0
        left = self._hold_until - time.monotonic()
        if left <= 0:
            self._hold_until = None
            return 0.0
        return left

    # -- training -------------------------------------------------------------------------------------
    def _train_one(self, *, here: bool = False) -> bool:
        """Train the next sealed window, if any (the worker thread: unless held for a snapshot; ``here``, the
        synchronous caller's thread: always)."""
        with self.train_lock:
            with self._cv:
                w = self._sealed.popleft() if self._sealed and (here or not self._held_locked()) else None
                self._inflight = w
            if w is None:
                return False
            try:
                self.train_fn(w)
            except BaseException as exc:
                with self._cv:
                    self._error = exc  # before the window stops being in flight: drain() sees it
                raise
            finally:
                with self._cv:
                    self._inflight = None
                    self.trained_windows += 1
                    self._cv.notify_all()
        return True

    def _train_pending_here(self) -> None:
        while self._train_one(here=True):
            pass

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop:
                    if held := self._held_locked():  # a step (a snapshot, a merge) is wanted between two windows
                        self._cv.wait(held)
                        continue
                    if self._sealed:
                        break
                    if self._open is not None and len(self._open) and len(self._sealed) < self.max_pending:
                        age = time.monotonic() - self._open.opened
                        # full (it grew while training was behind), or a quiet stream's partial window
                        if len(self._open) >= self.window_events or age >= self.window_seconds:
                            self._seal_locked()
                            continue
                        self._cv.wait(self.window_seconds - age)
                    else:
                        self._cv.wait(self.window_seconds)
                if self._stop:
                    return
            try:
                self._train_one()
            except BaseException:  # surfaced to the feeding thread on its next call
                log.exception("training a window failed; the learner stops learning")
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise TrainingError(f"training failed in the worker thread: {self._error!r}") from self._error

    def drain(self, timeout: float | None = None) -> bool:
        """Seal the open window and wait until everything is trained; False on timeout."""
        self.release()  # everything is to be trained now
        with self._cv:
            if self._open is not None and len(self._open):
                self._seal_locked()
        if self.synchronous:
            self._train_pending_here()
            return True
        self._ensure_thread()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while (self._sealed or self._inflight is not None) and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cv.wait(left)
        self._raise_if_failed()
        return True

    # -- state ------------------------------------------------------------------------------------------
    def _windows_locked(self) -> list[Window]:
        out = ([self._inflight] if self._inflight is not None else []) + list(self._sealed)
        return out + ([self._open] if self._open is not None and len(self._open) else [])

    def pending(self) -> list[Window]:
        """Every example not yet trained on, in order (hold `train_lock` for a consistent view)."""
        with self._cv:
            return [Window(list(w.xs), list(w.ys), w.opened) for w in self._windows_locked()]

    def restore(self, windows: list[Window]) -> None:
        """Queue ``windows`` (from a snapshot) for training, replacing anything pending."""
        with self._cv:
            now = time.monotonic()
            self._sealed = deque(Window(list(w.xs), list(w.ys), now) for w in windows if len(w))
            self._open = None
            self._cv.notify_all()
        if self._sealed and not self.synchronous:
            self._ensure_thread()

    def close(self, timeout: float = 10.0) -> None:
        with self._cv:
            self._stop = True
            self._hold_until = None
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
