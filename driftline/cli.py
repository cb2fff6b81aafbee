"""The `driftline` command line: run, produce, pretrain, replay, demo, checkpoint, config, broker."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from driftline import __version__
from driftline.errors import ConfigError, DriftlineError

log = logging.getLogger("driftline")


def _setup_logging(level: str, settings: Any = None) -> None:
    """Log to stderr at ``level`` (the Kafka clients at ``settings.kafka_log_level``); every secret of
    ``settings`` is redacted from every record."""
    from driftline import secrecy

    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kafka_level = getattr(logging, settings.kafka_log_level if settings is not None else "WARNING")
    for client in ("kafka", "librdkafka"):  # kafka-python's and librdkafka's records reach the root handler
        logging.getLogger(client).setLevel(kafka_level)
    logging.captureWarnings(True)  # library warnings go through the log (and its redaction)
    # Avalanche 0.6 warns about its own deprecated storage-policy call on every experience (and re-enables
    # the warning each time): one line per trained window would flood a long-running service's log
    logging.getLogger("py.warnings").addFilter(
        lambda record: "Call to deprecated function update" not in record.getMessage())
    if settings is not None:
        secrecy.register(settings)
    secrecy.install_log_redaction()


def _kv(text: str) -> tuple[str, Any]:
    """``key=value`` with value parsed as JSON when it parses (numbers, bools), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _install_stop_handlers(stop: Any) -> None:
    """First SIGTERM/SIGINT: graceful stop. A second SIGINT: exit at once."""
    def handler(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch, flushing, committing", signal.Signals(signum).name)
        stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


# -- run ------------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    from driftline.settings import load_settings
    from driftline.stream.loop import Service
    from driftline.stream.pipeline import learners_from_settings

    overrides: dict[str, Any] = {}
    if args.bootstrap_servers:
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    if args.metrics_port is not None:
        overrides["metrics"] = {"port": args.metrics_port}
    settings = load_settings(args.config, **overrides)  # command-line values are validated too
    _setup_logging(settings.log_level, settings)
    service = Service(settings, learners_from_settings(settings))
    _install_stop_handlers(service.stop)
    service.run()
    return 0


# -- produce --------------------------------------------------------------------------------
def _source(args: argparse.Namespace) -> Any:
    from driftline.stream import sources

    prefix = args.id_prefix if args.id_prefix is not None else f"{int(time.time())}-"
    if args.dataset:
        return sources.from_dataset(args.dataset, id_prefix=prefix)
    if args.generator:
        return sources.from_generator(
            args.generator, params=dict(args.param or []), seed=args.seed, drift_at=args.drift_at,
            drift_params=dict(args.drift_param or []), id_prefix=prefix,
        )
    if args.images:
        return sources.from_images(args.images, id_prefix=args.id_prefix or "", seed=args.seed)
    return sources.from_file(args.file, label_column=args.label_column, id_column=args.id_column,
                             id_prefix=prefix)


def cmd_produce(args: argparse.Namespace) -> int:
    from driftline.settings import load_settings
    from driftline.stream.kafka.clients import ensure_topics
    from driftline.stream.kafka.preflight import check_connection
    from driftline.stream.kafka.publisher import publish

    overrides = {"kafka": {"bootstrap_servers": args.bootstrap_servers}} if args.bootstrap_servers else {}
    settings = load_settings(args.config, **overrides)
    _setup_logging(settings.log_level, settings)
    kafka = settings.kafka
    topic = args.topic or settings.topics.input
    if args.generator and args.limit is None:
        log.info("synthetic generators are endless: producing until Ctrl-C (set --limit N to stop)")
    events = _source(args)
    check_connection(kafka)
    ensure_topics(kafka, [topic], partitions=args.partitions)
    stop = threading.Event()
    _install_stop_handlers(stop.set)
    n = publish(events, topic, kafka, limit=args.limit, rate=args.rate,
                progress=False if args.no_progress else None, stop=stop)
    print(f"produced {n} events to {topic} at {kafka.bootstrap_servers}", file=sys.stderr)
    return 0


# -- pretrain -------------------------------------------------------------------------------
def cmd_pretrain(args: argparse.Namespace) -> int:
    from driftline.pretrain import pretrain
    from driftline.settings import load_settings

    overrides = {"kafka": {"bootstrap_servers": args.bootstrap_servers}} if args.bootstrap_servers else {}
    settings = load_settings(args.config, **overrides)
    _setup_logging(settings.log_level, settings)
    source, name = _events_source(args, settings)
    report = pretrain(settings.model, source, args.output, source_name=name, limit=args.limit,
                      batch_size=args.batch_size, progress=False if args.no_progress else None)
    print(report.line(), file=sys.stderr)
    return 0


# -- replay ---------------------------------------------------------------------------------
def cmd_replay(args: argparse.Namespace) -> int:
    import itertools

    import orjson

    from driftline.settings import load_settings
    from driftline.stream.pipeline import learners_from_settings
    from driftline.stream.records import InboundRecord
    from driftline.stream.replay import LabelDelay, replay, simulate, write_summary

    overrides = {"kafka": {"bootstrap_servers": args.bootstrap_servers}} if args.bootstrap_servers else {}
    settings = load_settings(args.config, **overrides)
    _setup_logging(settings.log_level, settings)
    delay = LabelDelay.parse(args.label_delay)
    source, name = _events_source(args, settings)

    def items() -> Any:
        for item in source:
            if isinstance(item, InboundRecord):
                try:
                    yield orjson.loads(item.value or b"")
                except orjson.JSONDecodeError:
                    yield {"raw": (item.value or b"").decode("utf-8", "replace")}
            elif args.dataset or args.generator:
                item.pop("timestamp", None)  # the generation time, not event time: events get --interval-ms spacing
                yield item
            else:
                yield item

    delays: list[float] = []
    events = itertools.islice(items(), args.limit) if args.limit is not None else items()
    records = simulate(events, delay, args.seed, interval_ms=args.interval_ms, delays_out=delays)
    summary = replay(settings, learners_from_settings(settings), records, label_delay=delay, seed=args.seed,
                     speed=args.speed, total=args.limit, progress=False if args.no_progress else None,
                     label_delays=delays)
    if args.report:
        from driftline.stream.report import write_report

        index = write_report(summary, args.report)
        print(f"report: {index}", file=sys.stderr)
    if args.summary:
        write_summary(args.summary, summary)
    value = "n/a" if summary.cumulative is None else f"{summary.cumulative:.4f}"
    print(f"replayed {name}: {summary.events} events, {summary.predicted} predicted, {summary.learned} learned, "
          f"dead letters {summary.dead_lettered or 'none'}, {summary.labels_expired} labels expired; prequential "
          f"{summary.metric} {value}; {summary.events_per_s:,.0f} events/s", file=sys.stderr)
    if summary.models:  # champion and challengers: the served figure above, each model alone here
        alone = ", ".join(f"{name} {'n/a' if m['cumulative'] is None else format(m['cumulative'], '.4f')}"
                          for name, m in summary.models.items())
        moves = ", ".join(f"{frm} -> {to} at {n}" for n, frm, to, _ in summary.promotions) or "none"
        print(f"models alone: {alone}; promotions: {moves}; serving at the end: {summary.model}", file=sys.stderr)
    return 0


# -- demo -----------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from driftline.demo import run_demo

    _setup_logging("INFO")
    return run_demo(
        events=args.events, rate=args.rate, drift_at=args.drift_at, metrics_port=args.metrics_port,
        kafka_port=args.kafka_port, duration=args.duration, model=args.model,
    )


# -- checkpoint -----------------------------------------------------------------------------
def _store(args: argparse.Namespace) -> Any:
    from driftline.learners.checkpoint import DirectoryStore
    from driftline.settings import load_settings

    directory = args.dir
    keep = 3
    if directory is None:
        settings = load_settings(args.config)
        directory, keep = settings.checkpoint.directory, settings.checkpoint.keep
        if directory is None:
            raise ConfigError("checkpoint.directory is not set (in --config or DRIFTLINE_CHECKPOINT__DIRECTORY); "
                              "or pass --dir")
    return DirectoryStore(directory, keep=keep)


def cmd_checkpoint_list(args: argparse.Namespace) -> int:
    import datetime as dt

    store = _store(args)
    infos = store.list()
    if not infos:
        print(f"no checkpoints in {store.directory}")
        return 0
    print(f"{'version':>8}  {'created (UTC)':<20} {'learned':>10} {'bytes':>10}  offsets")
    for i in infos:
        created = dt.datetime.fromtimestamp(i.created_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        offsets = ", ".join(f"{t}[{p}]={o}" for t, parts in i.offsets.items() for p, o in sorted(parts.items()))
        print(f"{i.version:>8}  {created:<20} {i.learned:>10} {i.size:>10}  {offsets}")
    return 0


def cmd_checkpoint_rollback(args: argparse.Namespace) -> int:
    from driftline.learners.checkpoint import CheckpointError

    store = _store(args)
    try:
        info = store.rollback(args.version)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"checkpoint {info.version} ({info.learned} events learned) is now the newest in {store.directory}; "
          "later ones were renamed *.rolled-back. Restart the service to resume from it.")
    return 0


# -- broker ---------------------------------------------------------------------------------
# -- config ---------------------------------------------------------------------------------
def cmd_config_show(args: argparse.Namespace) -> int:
    """Print the effective configuration (file + environment + defaults); secrets print as **********."""
    from driftline.settings import load_settings

    settings = load_settings(args.config)
    data = settings.model_dump(mode="json")  # SecretStr -> "**********"
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate the configuration; with --connect also open one connection with its Kafka security."""
    from driftline.monitoring.http_security import http_security
    from driftline.settings import load_settings
    from driftline.stream.kafka import check_settings

    settings = load_settings(args.config)
    _setup_logging("WARNING", settings)
    check_settings(settings.kafka)  # CA, certificate, key and secret files readable; client properties known
    http_security(settings.metrics)
    if args.connect:
        from driftline.stream.kafka.preflight import check_connection

        if not check_connection(settings.kafka):
            print(f"driftline: no broker of {settings.kafka.bootstrap_servers} answered", file=sys.stderr)
            return 1
        print(f"configuration valid; {settings.kafka.bootstrap_servers} accepted a "
              f"{settings.kafka.security_protocol} connection")
    else:
        print("configuration valid")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from driftline.stream.broker import LocalKafkaBroker, fetch_kafka

    _setup_logging("INFO")
    libs = fetch_kafka(args.kafka_version)
    if args.fetch_only:
        print(f"Apache Kafka {args.kafka_version} jars ready in {libs}")
        return 0
    stop = threading.Event()
    _install_stop_handlers(stop.set)
    with LocalKafkaBroker(port=args.port, version=args.kafka_version) as broker:
        print(f"Kafka {args.kafka_version} broker at {broker.bootstrap_servers} (logs: {broker.log_file}); "
              "Ctrl-C stops it", flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                print(f"broker exited:\n{broker.tail_log()}", file=sys.stderr)
                return 1
    return 0


def _source_args(p: argparse.ArgumentParser, *, topic_source: bool) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="a River bundled dataset (e.g. Phishing, Bananas, TrumpApproval)")
    src.add_argument("--generator", help="a River synthetic generator (e.g. Agrawal, SEA, STAGGER, Hyperplane)")
    src.add_argument("--file", help="a .jsonl file of events or a .csv file (columns -> features)")
    src.add_argument("--images", metavar="DIR", help="a folder of images, one sub-folder per label "
                                                     "(DIR/<label>/<file>.png|jpg|webp): image events")
    if topic_source:
        src.add_argument("--topic", help="a Kafka topic range (see --from-offset/--to-offset/--from-time/--to-time)")
    p.add_argument("--param", type=_kv, action="append", metavar="KEY=VALUE",
                   help="generator parameter (repeatable), e.g. classification_function=0")
    p.add_argument("--drift-at", type=int, help="switch to the drift parameters after this many events")
    p.add_argument("--drift-param", type=_kv, action="append", metavar="KEY=VALUE",
                   help="generator parameter after the drift point (repeatable)")
    p.add_argument("--seed", type=int, default=42, help="generator seed, and --images order (default 42)")
    p.add_argument("--id-prefix", help="prefix of generated event ids (default: the current unix time + '-')")
    p.add_argument("--label-column", default="label", help="CSV column holding the label (default 'label')")
    p.add_argument("--id-column", default="id", help="CSV column holding the event id (default 'id')")


def _range_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from-offset", type=int, help="--topic: first offset of every partition (default: beginning)")
    p.add_argument("--to-offset", type=int, help="--topic: stop before this offset (default: the end at start)")
    p.add_argument("--from-time", help="--topic: first record at/after this time (ISO 8601 or unix ms)")
    p.add_argument("--to-time", help="--topic: stop at records at/after this time")
    p.add_argument("--limit", type=int, help="stop after this many events")


def _events_source(args: argparse.Namespace, settings: Any) -> tuple[Any, str]:
    """(iterable of event dicts / records, a name for it) from the source arguments."""
    if args.topic:
        from driftline.stream.kafka.ranges import TopicRange, parse_time, read_range

        rng = TopicRange(args.topic, start_offset=args.from_offset, end_offset=args.to_offset,
                         start_time=parse_time(args.from_time) if args.from_time else None,
                         end_time=parse_time(args.to_time) if args.to_time else None)
        return read_range(settings.kafka, rng), rng.describe()
    if args.generator and args.limit is None:
        raise ConfigError(f"{args.command}: --generator streams are endless; pass --limit N")
    name = (f"dataset:{args.dataset}" if args.dataset else f"generator:{args.generator}" if args.generator
            else f"images:{args.images}" if args.images else f"file:{args.file}")
    return _source(args), name


def build_parser() -> argparse.ArgumentParser:
    from driftline.stream.broker import KAFKA_VERSION

    p = argparse.ArgumentParser(
        prog="driftline",
        description="Continual learning on Kafka event streams: predict every event, learn once its label "
                    "is known, expose quality and latency to Prometheus.",
    )
    p.add_argument("--version", action="version", version=f"driftline {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the long-running consumer (test-then-train service)",
                       description="Consume the input topic (and topics.labels, when set) in batches; predict each "
                                   "event and publish the prediction; learn from labeled events and joined "
                                   "labels; watch the error stream with drift.detectors; commit offsets after "
                                   "outputs are flushed. SIGTERM/SIGINT finish the batch, flush, commit and "
                                   "exit 0.")
    r.add_argument("--config", "-c", help="YAML config file (environment DRIFTLINE_* overrides it)")
    r.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers")
    r.add_argument("--metrics-port", type=int, help="override metrics.port (0: pick a free port)")
    r.set_defaults(func=cmd_run)

    pr = sub.add_parser("produce", help="publish labeled events from a dataset, generator, file or image folder",
                        description="Publish labeled events (JSON, key = event id) to a topic.")
    _source_args(pr, topic_source=False)
    pr.add_argument("--topic", help="target topic (default: topics.input of the config)")
    pr.add_argument("--config", "-c", help="YAML config file for Kafka connection settings")
    pr.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers")
    pr.add_argument("--limit", type=int, help="stop after this many events")
    pr.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    pr.add_argument("--partitions", type=int, default=1, help="partitions if the topic is created (default 1)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_produce)

    pt = sub.add_parser(
        "pretrain", help="train a starting model on a source domain (dataset, file or topic range)",
        description="Train the configured model (backbone + head, as `run` will use it) on a source dataset, a "
                    "JSONL/CSV file or a Kafka topic range, test-then-train, and write it to OUTPUT. Point "
                    "model.start_from at OUTPUT and `driftline run` starts from it: transfer from the source "
                    "domain to the target stream.")
    _source_args(pt, topic_source=True)
    pt.add_argument("--output", "-o", required=True, help="model file to write (atomically)")
    pt.add_argument("--config", "-c", help="YAML config: the model section is the model trained")
    pt.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers (for --topic)")
    _range_args(pt)
    pt.add_argument("--batch-size", type=int, default=256, help="events embedded per backbone call (default 256)")
    pt.add_argument("--no-progress", action="store_true", help="no progress bar")
    pt.set_defaults(func=cmd_pretrain)

    rp = sub.add_parser(
        "replay", help="run the pipeline over a recorded stream and write a report",
        description="Run the same pipeline as `run` (same config and learner) over a dataset, a JSONL/CSV file or a "
                    "Kafka topic range, as fast as possible or time-compressed, optionally with simulated label "
                    "delay; deterministic for a seed. Writes an HTML report with plots and a JSON summary.")
    _source_args(rp, topic_source=True)
    rp.add_argument("--config", "-c", help="YAML config (the model and label-join settings used)")
    rp.add_argument("--bootstrap-servers", help="override kafka.bootstrap_servers (for --topic)")
    _range_args(rp)
    rp.add_argument("--label-delay", default="none",
                    help="simulated label delay: none (labels on the events), SECONDS, or random:MIN:MAX")
    rp.add_argument("--speed", type=float, help="time compression: replay event time this many times faster than "
                                                "real time (default: as fast as possible)")
    rp.add_argument("--interval-ms", type=int, default=1000,
                    help="event-time spacing of events without a timestamp (default 1000)")
    rp.add_argument("--report", help="directory for index.html, the PNG plots and summary.json")
    rp.add_argument("--summary", help="also write the JSON summary to this file")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    rp.set_defaults(func=cmd_replay)

    d = sub.add_parser("demo", help="local broker + drifting synthetic stream + the service, in one command",
                       description="Start a local Apache Kafka broker, produce a drifting synthetic stream "
                                   "(Agrawal, concept 0 -> 4) and run the service on it with metrics on HTTP. "
                                   "Ctrl-C stops everything.")
    d.add_argument("--events", type=int, help="stop producing after this many events (default: endless)")
    d.add_argument("--rate", type=float, default=500.0, help="events per second (default 500)")
    d.add_argument("--drift-at", type=int, default=5000, help="event index of the concept drift (default 5000)")
    d.add_argument("--metrics-port", type=int, default=9464, help="metrics HTTP port (default 9464)")
    d.add_argument("--kafka-port", type=int, help="local broker port (default: a free port)")
    d.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    d.add_argument("--model", default="HoeffdingAdaptiveTreeClassifier", help="River classifier name")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("checkpoint", help="list checkpoints or roll back to one",
                       description="Checkpoints hold the learning state and the offsets it reflects; the service "
                                   "restores the newest valid one at start.")
    csub = c.add_subparsers(dest="checkpoint_command", required=True, metavar="ACTION")
    for name, func, text in (("list", cmd_checkpoint_list, "list checkpoints, oldest first"),
                             ("rollback", cmd_checkpoint_rollback,
                              "make VERSION the newest (stop the service first; it resumes from it on restart)")):
        cp = csub.add_parser(name, help=text, description=text)
        if name == "rollback":
            cp.add_argument("version", type=int, help="checkpoint version (see 'driftline checkpoint list')")
        where = cp.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", "-c", help="YAML config (uses checkpoint.directory)")
        where.add_argument("--dir", help="checkpoint directory")
        cp.set_defaults(func=func)

    cf = sub.add_parser("config", help="show or check the effective configuration",
                        description="The configuration the service would run with: the YAML file, then DRIFTLINE_* "
                                    "environment variables over it, then defaults. Secrets are never printed.")
    cfsub = cf.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    cs = cfsub.add_parser("show", help="print the effective configuration, secrets masked",
                          description="Print the effective configuration; secrets print as **********.")
    cs.add_argument("--config", "-c", help="YAML config file")
    cs.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format (default yaml)")
    cs.set_defaults(func=cmd_config_show)
    cc = cfsub.add_parser("check", help="validate the configuration (and with --connect, the Kafka connection)",
                          description="Validate the configuration and that its CA, certificate, key and secret "
                                      "files can be read; with --connect, open one connection to the brokers "
                                      "with the configured TLS/SASL. Exit 0: valid; 2: invalid or rejected.")
    cc.add_argument("--config", "-c", help="YAML config file")
    cc.add_argument("--connect", action="store_true", help="also connect to kafka.bootstrap_servers")
    cc.set_defaults(func=cmd_config_check)

    b = sub.add_parser("broker", help="run (or just fetch) a local single-node Apache Kafka broker",
                       description="Fetch Apache Kafka's broker from Maven Central (once, into "
                                   "~/.cache/driftline) and run it in KRaft mode on 127.0.0.1.")
    b.add_argument("--port", type=int, help="listener port (default: a free port)")
    b.add_argument("--kafka-version", default=KAFKA_VERSION, help=f"Kafka version (default {KAFKA_VERSION})")
    b.add_argument("--fetch-only", action="store_true", help="only download the jars into the cache")
    b.set_defaults(func=cmd_broker)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except DriftlineError as exc:
        print(f"driftline: error: {exc}", file=sys.stderr)
        return exc.exit_code  # 2 (a configuration or access error) is not restarted into by the unit
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
