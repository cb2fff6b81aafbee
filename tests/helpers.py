"""Test helpers: produce raw records, read topics to the end, run the service as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from driftline.stream.broker import free_port
from driftline.testing import scrape


def produce_raw(bootstrap: str, topic: str, values: Iterable[bytes | None], keys: Iterable[bytes | None] | None = None
                ) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    n = 0
    keys_it = iter(keys) if keys is not None else None
    for v in values:
        producer.send(topic, value=v, key=next(keys_it) if keys_it else None)
        n += 1
    producer.flush()
    producer.close()
    return n


def produce_events(bootstrap: str, topic: str, events: Iterable[dict[str, Any]]) -> int:
    return produce_raw(bootstrap, topic, (json.dumps(e).encode() for e in events))


def read_topic(bootstrap: str, topic: str, timeout: float = 30.0,
               isolation_level: str = "read_uncommitted") -> list[Any]:
    """Every record of ``topic`` (all partitions), from the beginning to the current end."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000,
                             isolation_level=isolation_level)
    try:
        deadline = time.monotonic() + timeout
        parts: set[int] | None = None
        while time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            time.sleep(0.2)
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        out: list[Any] = []
        while time.monotonic() < deadline:
            if all(consumer.position(tp) >= end[tp] for tp in tps):
                return out
            for recs in consumer.poll(timeout_ms=500).values():
                out.extend(recs)
        raise TimeoutError(f"could not read {topic} to its end within {timeout}s")
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {p: consumer.committed(TopicPartition(topic, p)) for p in parts}
    finally:
        consumer.close(autocommit=False)


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def write_config(path: Path, bootstrap: str, prefix: str, **sections: dict[str, Any]) -> Path:
    cfg: dict[str, Any] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"{prefix}-group", "client_id": prefix},
        "topics": {"input": f"{prefix}-in", "predictions": f"{prefix}-pred", "dead_letter": f"{prefix}-dlq"},
        "metrics": {"port": free_port()},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path.write_text(yaml.safe_dump(cfg))
    return path


class ServiceProcess:
    """`driftline run --config FILE` as a child process."""

    def __init__(self, config: Path, log_path: Path) -> None:
        cfg = yaml.safe_load(config.read_text())
        self.port = int(cfg["metrics"]["port"])
        auth = cfg["metrics"].get("auth") or {}
        self.authorization = f"Bearer {auth['token']}" if auth.get("kind") == "bearer" else None
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "driftline.cli", "run", "--config", str(config)],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def metrics(self) -> dict[str, float]:
        return scrape(self.port, authorization=self.authorization)

    def metric(self, name: str, default: float = 0.0) -> float:
        try:
            return self.metrics().get(name, default)
        except OSError:
            return default

    def wait_ready(self, timeout: float = 180.0) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status == 200
            except OSError:
                return False
        wait_for(ready, timeout, "service readiness")

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]



def post_promote(port: int, body: bytes, token: str | None) -> tuple[int, str]:
    """POST ``body`` to a service's /promote with a bearer ``token`` (None: without one); (status, text)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/promote", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
