"""Publish event dicts to a topic at an optional rate, with a progress bar."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable

from driftline.progress import progress_bar
from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import make_producer
from driftline.stream.sources import EventDict


def publish(
    events: Iterable[EventDict], topic: str, kafka: KafkaSettings, *, limit: int | None = None,
    rate: float | None = None, progress: bool | None = None, stop: threading.Event | None = None,
) -> int:
    """Send events (key = event id) until exhausted, ``limit`` or ``stop``; returns the count sent.

    ``rate`` is events per second (None: as fast as possible). Raises if Kafka does not
    acknowledge every record.
    """
    producer = make_producer(kafka, client_suffix="publisher")
    bar = progress_bar(limit, desc=f"-> {topic}", unit="ev", show=progress)
    sent = 0
    start = time.monotonic()
    futures = []
    try:
        for ev in events:
            if (limit is not None and sent >= limit) or (stop is not None and stop.is_set()):
                break
            if rate:
                delay = start + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            futures.append(producer.send(topic, key=str(ev["id"]).encode("utf-8"),
                                         value=json.dumps(ev, separators=(",", ":")).encode("utf-8")))
            sent += 1
            if sent % 1000 == 0:
                bar.update(1000)
                futures = [f for f in futures if not f.is_done or f.failed()]
        producer.flush()
        bar.update(sent % 1000)
        failed = [f for f in futures if f.failed()]
        if failed:
            raise RuntimeError(f"{len(failed)} events were not acknowledged; first error: {failed[0].exception!r}")
        return sent
    finally:
        bar.close()
        producer.close(timeout=30)
