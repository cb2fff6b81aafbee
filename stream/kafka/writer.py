"""Where output records go: a `RecordWriter` sends records and, on `flush()`, reports which failed.

`ThreadWriter` is a kafka-python producer in this process. `ProcessWriter` runs the producer in a
child process: records are handed over in chunks through a pipe while the run loop keeps working,
so kafka-python's per-record cost (~20 us of Python in `send`) runs on another core instead of
under the run loop's GIL. Both give the same guarantee: `flush()` returns only after Kafka has
acknowledged every record sent since the last flush, or reports the ones it did not.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Protocol

from kafka import KafkaProducer

from driftline.errors import PublishError
from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import make_producer

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]] | None
CHUNK = 256  # records per hand-over to the child process


@dataclass
class FlushResult:
    sent: int = 0
    failed: dict[str, list[str]] = field(default_factory=dict)  # topic -> error texts


class RecordWriter(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Headers = None) -> None: ...

    def flush(self, timeout: float | None = None) -> FlushResult: ...

    def partitions_for(self, topic: str) -> int: ...

    def close(self, timeout: float = 30.0) -> None: ...


class ThreadWriter:
    """A KafkaProducer in this process (its network I/O on kafka-python's sender thread)."""

    def __init__(self, cfg: KafkaSettings, client_suffix: str = "producer", **overrides: Any) -> None:
        self.producer: KafkaProducer = make_producer(cfg, client_suffix=client_suffix, **overrides)
        self._pending: list[tuple[str, Any]] = []
        self._refused: list[tuple[str, str]] = []  # raised by send() itself, e.g. a record too large

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Headers = None) -> None:
        try:
            fut = self.producer.send(topic, key=key, value=value, partition=partition,
                                     headers=list(headers) if headers else None)
        except Exception as exc:  # reported by flush(), like a failed acknowledgement
            self._refused.append((topic, repr(exc)))
            return
        self._pending.append((topic, fut))

    def flush(self, timeout: float | None = None) -> FlushResult:
        pending, self._pending = self._pending, []
        refused, self._refused = self._refused, []
        result = FlushResult(sent=len(pending) + len(refused))
        for topic, err in refused:
            result.failed.setdefault(topic, []).append(err)
        if not pending:
            return result
        self.producer.flush(timeout=timeout)
        for topic, fut in pending:
            if not fut.is_done:
                result.failed.setdefault(topic, []).append("not acknowledged before the flush timeout")
            elif fut.failed():
                result.failed.setdefault(topic, []).append(repr(fut.exception))
        return result

    def partitions_for(self, topic: str) -> int:
        parts = self.producer.partitions_for(topic)  # waits for the topic's metadata
        return len(parts) if parts else 0

    def close(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(Exception):
            self.producer.flush(timeout=timeout)
        self.producer.close(timeout=timeout)


def _worker(conn: Connection, cfg: KafkaSettings, client_suffix: str) -> None:
    """Child process: own the producer, execute chunks and flush requests from the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    with contextlib.suppress(Exception):
        from driftline.process import die_with_parent

        die_with_parent()
    from driftline import secrecy

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s [writer]: %(message)s")
    secrecy.register(cfg)
    secrecy.install_log_redaction()
    writer = ThreadWriter(cfg, client_suffix)
    conn.send(("ready", os.getpid()))
    try:
        while True:
            try:
                msg = conn.recv_bytes()
            except EOFError:
                return  # parent gone
            op, arg = pickle.loads(msg)
            if op == "records":
                for topic, key, value, partition, headers in arg:
                    writer.send(topic, key, value, partition, headers)
            elif op == "flush":
                conn.send(("flushed", writer.flush(arg)))
            elif op == "partitions":
                conn.send(("partitions", writer.partitions_for(arg)))
            elif op == "close":
                writer.close(arg)
                conn.send(("closed", None))
                return
    finally:
        with contextlib.suppress(Exception):
            writer.producer.close(timeout=0)


class ProcessWriter:
    """A KafkaProducer in a child process (spawned, so no threads are forked)."""

    def __init__(self, cfg: KafkaSettings, client_suffix: str = "producer", start_timeout: float = 120.0) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # the settings object itself (pickled over the pipe): a JSON dump would mask its secrets
        self._proc = ctx.Process(target=_worker, args=(child, cfg, client_suffix),
                                 name="driftline-writer", daemon=True)
        self._proc.start()
        child.close()
        self._buf: list[tuple[str, bytes | None, bytes | None, int | None, Headers]] = []
        self._reply("ready", start_timeout)

    def _reply(self, expected: str, timeout: float | None) -> Any:
        if not self._conn.poll(timeout):
            raise PublishError(f"the producer process did not answer {expected!r} within {timeout}s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            raise PublishError(f"the producer process died (exit code {self._proc.exitcode})") from None
        if kind != expected:
            raise PublishError(f"the producer process answered {kind!r}, expected {expected!r}")
        return value

    def _ship(self) -> None:
        if self._buf:
            buf, self._buf = self._buf, []
            try:
                self._conn.send_bytes(pickle.dumps(("records", buf), protocol=pickle.HIGHEST_PROTOCOL))
            except (BrokenPipeError, OSError) as exc:
                raise PublishError(f"the producer process is gone (exit code {self._proc.exitcode})") from exc

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Headers = None) -> None:
        self._buf.append((topic, key, value, partition, headers))
        if len(self._buf) >= CHUNK:
            self._ship()

    def _call(self, op: str, arg: Any, reply: str, timeout: float | None) -> Any:
        self._ship()
        try:
            self._conn.send_bytes(pickle.dumps((op, arg)))
        except (BrokenPipeError, OSError) as exc:
            raise PublishError(f"the producer process is gone (exit code {self._proc.exitcode})") from exc
        return self._reply(reply, timeout)

    def flush(self, timeout: float | None = None) -> FlushResult:
        # the child's flush has its own timeout; allow it that long plus a margin to answer
        result: FlushResult = self._call("flush", timeout, "flushed", None if timeout is None else timeout + 30)
        return result

    def partitions_for(self, topic: str) -> int:
        n: int = self._call("partitions", topic, "partitions", 120.0)
        return n

    def close(self, timeout: float = 30.0) -> None:
        try:
            if self._proc.is_alive():
                self._call("close", timeout, "closed", timeout + 30)
        except PublishError as exc:
            log.warning("closing the producer process: %s", exc)
        finally:
            self._conn.close()
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)


def make_writer(cfg: KafkaSettings, client_suffix: str = "producer") -> RecordWriter:
    """The writer `kafka.publisher` asks for (`auto`: a process when there is more than one CPU)."""
    mode = cfg.publisher
    if mode == "auto":
        mode = "process" if (os.cpu_count() or 1) > 1 else "thread"
    return ProcessWriter(cfg, client_suffix) if mode == "process" else ThreadWriter(cfg, client_suffix)
