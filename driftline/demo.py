"""`driftline demo`: a local broker, a drifting synthetic stream and the service, wired together, with drift
detection and the adaptation ladder on, a live page and a one-line summary every few seconds."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from driftline.learners.factory import build_learner
from driftline.settings import DriftSettings, KafkaSettings, MetricsSettings, ModelSettings, Settings, TopicSettings
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
            metrics=MetricsSettings(port=metrics_port, rolling_window=500),
            # the product's point, visible: the error stream watched, a drift acted on, the accuracy recovering
            drift=DriftSettings.model_validate({
                "detectors": [{"name": "ADWIN", "params": {"delta": 0.002}}],
                "policies": [{"name": "reset"}, {"name": "replay_burst"}], "cooldown": 1000}),
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
        if service.live is not None:
            reporter = threading.Thread(target=_report, args=(service, stop), name="demo-summary", daemon=True)
            reporter.start()
        print(
            "\n".join([
                "driftline demo",
                f"  Kafka broker      {broker.bootstrap_servers} (Apache Kafka {broker.version}, KRaft)",
                f"  input topic       {settings.topics.input}  (Agrawal stream, {rate:g} events/s, "
                f"concept drift 0 -> 4 at event {drift_at})",
                f"  predictions       {settings.topics.predictions}",
                f"  dead letters      {settings.topics.dead_letter}",
                f"  model             {model}",
                f"  live page         http://127.0.0.1:{port}/  (rolling accuracy, drift detections, adaptations)",
                f"  metrics           http://127.0.0.1:{port}/metrics  (health: /healthz, /readyz)",
                "  drift             ADWIN on the error stream; adaptation ladder: reset, replay_burst",
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


def _report(service: Service, stop: threading.Event, every_s: float = 5.0) -> None:
    """One line every few seconds: events/s, rolling accuracy, detections, adaptations."""
    assert service.live is not None
    while not stop.wait(every_s):
        snap = service.live.snapshot()
        acc = "-" if snap["rolling"] is None else f"{snap['rolling']:.3f}"
        drifts = sum(1 for d in snap["detections"] if d[2] == "drift")
        print(f"[demo] {snap['events_per_s']:,.0f} events/s | {snap['learned']:,} labeled | rolling accuracy {acc} | "
              f"{drifts} drift detections | {len(snap['adaptations'])} adaptations", flush=True)
