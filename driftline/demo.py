"""`driftline demo`: a local broker, a drifting synthetic stream and the service, wired together."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from driftline.learners.factory import build_learner
from driftline.settings import KafkaSettings, MetricsSettings, ModelSettings, Settings, TopicSettings
from driftline.stream.broker import LocalKafkaBroker
from driftline.stream.kafka.clients import ensure_topics
from driftline.stream.kafka.publisher import publish
from driftline.stream.loop import Service
from driftline.stream.observers import Quality
from driftline.stream.sources import from_generator

log = logging.getLogger("driftline.demo")


def run_demo(*, events: int | None, rate: float, drift_at: int, metrics_port: int, kafka_port: int | None,
             duration: float | None, model: str) -> int:
    with LocalKafkaBroker(port=kafka_port) as broker:
        settings = Settings(
            kafka=KafkaSettings(bootstrap_servers=broker.bootstrap_servers, group_id="driftline-demo"),
            topics=TopicSettings(input="demo.events", predictions="demo.predictions",
                                 dead_letter="demo.dead-letter"),
            model=ModelSettings(name=model, classes=[0, 1]),
            metrics=MetricsSettings(port=metrics_port),
        )
        ensure_topics(settings.kafka, [settings.topics.input], partitions=3)
        service = Service(settings, build_learner(settings.model))
        stop = threading.Event()

        def shutdown(signum: int, frame: FrameType | None) -> None:
            log.info("stopping the demo (producer, service, broker)")
            stop.set()
            service.stop()

        signal.signal(signal.SIGINT, shutdown)
        signal.signal(signal.SIGTERM, shutdown)
        stream = from_generator("Agrawal", params={"classification_function": 0}, drift_at=drift_at,
                                drift_params={"classification_function": 4}, seed=42, id_prefix="demo-")
        producer = threading.Thread(
            target=publish, name="demo-producer",
            kwargs=dict(events=stream, topic=settings.topics.input, kafka=settings.kafka, limit=events,
                        rate=rate, progress=False, stop=stop),
            daemon=True,
        )
        producer.start()
        if duration is not None:
            def expire() -> None:
                stop.set()
                service.stop()

            timer = threading.Timer(duration, expire)
            timer.daemon = True
            timer.start()
        port = service.http.port if service.http else metrics_port
        print(
            "\n".join([
                "driftline demo",
                f"  Kafka broker      {broker.bootstrap_servers} (Apache Kafka {broker.version}, KRaft)",
                f"  input topic       {settings.topics.input}  (Agrawal stream, {rate:g} events/s, "
                f"concept drift 0 -> 4 at event {drift_at})",
                f"  predictions       {settings.topics.predictions}",
                f"  dead letters      {settings.topics.dead_letter}",
                f"  model             {model}",
                f"  metrics           http://127.0.0.1:{port}/metrics  (health: /healthz, /readyz)",
                "  Ctrl-C stops everything.",
            ]),
            flush=True,
        )
        totals = service.run()
        stop.set()
        producer.join(timeout=30)
        tracker = service.processor.require(Quality).tracker
        accuracy = tracker.cumulative if tracker.n else float("nan")
        print(f"demo done: {totals.predicted} predicted, {totals.learned} learned, "
              f"{totals.dead_lettered} dead-lettered; prequential accuracy {accuracy:.3f}", flush=True)
    return 0
