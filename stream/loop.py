"""The run loop: poll a batch -> process it -> flush outputs -> at a save point, save the state and commit
the offsets it reflects (`checkpointing`). Nothing else.

Offsets are committed only after every output of the batch (predictions and dead letters) is
acknowledged by Kafka, and only at save points. A stop request (SIGTERM/SIGINT) is honoured between
batches: the batch in hand is finished, flushed, saved and committed, then the consumer leaves its group.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector

from driftline.errors import ConfigError, KafkaSecurityError
from driftline.learners.base import Learner
from driftline.learners.capabilities import background_trained
from driftline.learners.ensemble import GroupEnsemble
from driftline.monitoring.http import MetricsServer
from driftline.monitoring.http_security import http_security
from driftline.monitoring.live import LiveSampler, LiveStatus
from driftline.monitoring.metrics import ServiceMetrics
from driftline.process import settle_heap
from driftline.settings import Settings
from driftline.stream.checkpointing import Checkpointer, Commit
from driftline.stream.group_sync import member_side
from driftline.stream.kafka import open_backend
from driftline.stream.kafka.ranges import read_partitions
from driftline.stream.kafka.seam import (
    CommitLostError,
    Consumer,
    KafkaAccessError,
    KafkaBackend,
    KafkaClientError,
    RetriableKafkaError,
    TopicPartition,
    TransactionalWriter,
)
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.observers import Adaptation, BatchResult, DetectionLog, Ledger, Quality
from driftline.stream.partition_state import COMPACTED, Changelog
from driftline.stream.pipeline import partitioned, processor_from_settings
from driftline.stream.processor import EventProcessor
from driftline.stream.quarantine import QUARANTINED, Quarantine
from driftline.stream.records import InboundRecord
from driftline.stream.sink import OutputSink
from driftline.stream.sync import GroupSync, SyncState

log = logging.getLogger(__name__)

HEALTH_STALL_S = 120.0


@dataclass
class RunTotals(BatchResult):
    """Counts since the loop started, and when it first consumed and last committed."""

    batches: int = 0
    first_batch_at: float | None = None  # time.monotonic() when the first batch arrived
    last_commit_at: float | None = None  # time.monotonic() of the last successful commit

    def add(self, r: BatchResult) -> None:
        self.batches += 1
        self.consumed += r.consumed
        self.predicted += r.predicted
        self.learned += r.learned
        self.dead_lettered += r.dead_lettered


def _copy(items: Any) -> list[Any]:
    """A list of a deque or list another thread may be appending to."""
    for _ in range(5):
        try:
            return list(items)
        except RuntimeError:  # mutated during iteration
            continue
    return []


class Service:
    """The long-running consumer. `run()` blocks until `stop()` (or a signal handler calling it)."""

    def __init__(self, settings: Settings, learner: Learner | Mapping[str, Learner],
                 registry: CollectorRegistry | None = None, *, serve_http: bool = True,
                 kafka: KafkaBackend | None = None) -> None:
        self.settings = settings
        # one model, or with `models` each model's learner by name (champion and challengers)
        self.learners = learner
        first = learner[settings.serving_model] if isinstance(learner, Mapping) else learner
        if isinstance(learner, Mapping) and any(background_trained(m) is not None for m in learner.values()):
            raise ConfigError("models: a model that trains in the background (Continual) cannot race challengers "
                              "yet; use it as the one model")
        self.trained = background_trained(first)  # declared by the learner's class: fixed for the run
        if self.trained is not None and settings.sync.mode == "ensemble":
            raise ConfigError(f"sync.mode ensemble: model {first.name} trains in the background (Continual); its "
                              "snapshots are not supported yet; set sync.mode none")
        self.kafka = kafka if kafka is not None else open_backend(settings.kafka)
        self._first = first
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ServiceMetrics(self.registry, model=settings.serving_model if settings.models else first.name,
                                      task=first.task)
        # process_cpu_seconds_total, process_resident_memory_bytes, ... (the process dashboard)
        ProcessCollector(registry=self.registry)
        self.totals = RunTotals()
        self._stop = threading.Event()
        self._heartbeat = time.monotonic()
        self._assigned = False
        self._running = False
        self._lag_at = 0.0
        self._lag_keys: set[tuple[str, str]] = set()
        self._paused = False
        self._closing = False
        self._graceful = False  # stopped on request, everything saved: a static member may leave the group
        self.http: MetricsServer | None = None
        self.live: LiveSampler | None = None
        self._pipeline: EventProcessor | None = None  # the running pipeline, for the live page
        self._promotions: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()  # (model, by), from other threads
        if serve_http:
            tls, auth = http_security(settings.metrics)
            self.live = LiveSampler(self._live_status)
            self.http = MetricsServer(self.registry, settings.metrics.host, settings.metrics.port,
                                      healthy=self._healthy, ready=self._ready, tls=tls, auth=auth, live=self.live,
                                      promote=self.request_promotion if settings.models else None)

    @property
    def learner(self) -> Learner:
        """The serving model (with challengers: the champion now)."""
        return self._pipeline.learner if self._pipeline is not None else self._first

    @property
    def serving(self) -> str:
        """The serving model's name (the metric label and the predictions' `model`)."""
        return self._pipeline.champion.name if self._pipeline is not None else self.settings.serving_model

    def request_promotion(self, model: str, by: str = "http") -> tuple[int, str]:
        """Ask for ``model`` to serve from the next batch on (any thread: the run loop applies it, audited and
        counted); (HTTP status, message)."""
        if model not in self.settings.models:
            return 404, f"no model named {model!r}; the models are {', '.join(self.settings.models)}"
        self._promotions.put((model, by))
        return 202, f"promotion of {model} accepted: it serves from the next batch on"

    def _apply_promotions(self, processor: EventProcessor) -> None:
        while not self._promotions.empty():
            model, by = self._promotions.get_nowait()
            processor.promote(model, by=by)

    # -- probes -----------------------------------------------------------------------------
    def _healthy(self) -> tuple[bool, str]:
        stalled = time.monotonic() - self._heartbeat
        if self._running and stalled > HEALTH_STALL_S:
            return False, f"run loop stalled for {stalled:.0f}s"
        return True, "ok"

    def _ready(self) -> tuple[bool, str]:
        if not self._running:
            return False, "not running"
        if self._stop.is_set():
            return False, "stopping"
        if not self._assigned:
            return False, "no partitions assigned yet"
        return True, "ok"

    def _live_status(self) -> LiveStatus:
        """The live page's view (read from another thread: counters and copies of bounded logs)."""
        processor = self._pipeline
        lag = sum(m.value for f in self.metrics.lag.collect() for m in f.samples) if processor else None
        if processor is None:
            return LiveStatus(0, None, "accuracy", 0, lag, self.serving)
        tracker = processor.require(Quality).tracker
        detections = processor.require(DetectionLog).latest
        adaptation = processor.find(Adaptation)
        actions = adaptation.adapter.actions if adaptation is not None else []
        return LiveStatus(
            learned=processor.require(Ledger).learned, rolling=float(tracker.rolling) if tracker.n else None,
            metric=tracker.metric, consumed=self.totals.consumed, lag=lag, model=self.serving,
            detections=[(d.labeled, d.detector, d.level) for d in _copy(detections) if d.source == "error"],
            adaptations=[(a.labeled, a.action) for a in _copy(actions)])

    # -- lifecycle --------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish its batch, flush, commit and return. Safe from signal handlers."""
        self._stop.set()

    def run(self) -> RunTotals:
        s = self.settings
        kafka = self.kafka
        kafka.check_connection()  # a rejected certificate or password stops here, with the setting to check
        kafka.ensure_topics([s.topics.input])
        # predictions mirror the input's partitioning (see sink.py); dead letters need no order. Labels are
        # keyed by event id with the input's partition count, so an event and its label meet in one instance.
        outputs = [s.topics.predictions, s.topics.dead_letter,
                   *(t for t in (s.topics.labels, s.topics.expired, s.topics.audit) if t),
                   *([s.topics.shadow] if s.topics.shadow and s.models else [])]
        input_partitions = kafka.topic_partitions(s.topics.input)
        kafka.ensure_topics(outputs, partitions=input_partitions)
        inputs = [s.topics.input, *([s.topics.labels] if s.topics.labels else [])]
        if self.http is not None:
            self.http.start()
            log.info("metrics on %s/metrics; live page on %s/", self.http.url, self.http.url)
        if self.live is not None:
            self.live.start()
        transactional = kafka.transactional_writer(self._transactional_id()) if s.kafka.exactly_once else None
        writer: RecordWriter = transactional if transactional is not None else kafka.writer()
        consumer = kafka.consumer()
        sink = OutputSink(writer, s.topics.predictions, s.topics.dead_letter, self.metrics,
                          dead_letter_max_bytes=s.topics.dead_letter_max_bytes)
        sync_state = SyncState() if s.sync.mode == "average" else None
        # sync.mode ensemble: the vote of this member's model and the others' snapshots serves; its own learns
        ensemble = GroupEnsemble(self._first, self._identity()) if s.sync.mode == "ensemble" else None
        processor = processor_from_settings(s, ensemble or self.learners, sink, self.metrics,
                                            labels_topic=s.topics.labels,
                                            expired_topic=s.topics.expired, audit_topic=s.topics.audit,
                                            extra=[sync_state] if sync_state is not None else [])
        self.processor = processor
        self._pipeline = processor
        parts = partitioned(processor)
        changelog = self._changelog(writer, input_partitions) if parts else None
        commit: Commit = (functools.partial(self._commit_transaction, transactional, consumer)
                          if transactional is not None else functools.partial(self._commit, consumer))
        checkpointer = Checkpointer(s.checkpoint, processor, self.metrics, parts=parts, changelog=changelog,
                                    flush=sink.flush, commit=commit,
                                    begin=transactional.begin if transactional is not None else None,
                                    member=f"{s.kafka.client_id}@{socket.gethostname()}:{os.getpid()}",
                                    owner=self._identity(),
                                    trained=self.trained)
        self.checkpointer = checkpointer
        syncer = member_side(s, kafka, self.learner, member=self._identity(), state=sync_state, ensemble=ensemble,
                             writer=writer, transactional=transactional, sink=sink, metrics=self.metrics)
        quarantine = Quarantine(s.checkpoint.directory)
        quarantine.start()
        try:
            checkpointer.restore(consumer.committed)  # the newest checkpoint the group committed
            if syncer is not None:  # the group's model, before the first prediction
                syncer.join()
            # on_revoke runs inside poll(): the previous batch is already processed and flushed
            consumer.subscribe(inputs, on_assign=lambda tps: checkpointer.assigned(consumer, tps),
                               on_revoke=self._revoked, on_lost=self._lost)
            settle_heap(s.gc_threshold)
            self._running = True
            self.metrics.up.set(1)
            log.info("consuming %s as group %r with model %s (%s)", " + ".join(inputs), s.kafka.group_id,
                     self.learner.name, self.learner.task)
            consistent = True  # everything processed so far is flushed: the state may be saved
            try:
                while not self._stop.is_set():
                    self._heartbeat = time.monotonic()
                    try:
                        records = consumer.poll(s.kafka.poll_timeout_ms)
                    except RetriableKafkaError as exc:  # Kafka unreachable for now: poll again shortly
                        self._retriable(exc)
                        self._stop.wait(min(1.0, s.kafka.poll_timeout_ms / 1000))
                        continue
                    self._assigned = bool(consumer.assignment())
                    if records:
                        if self.totals.first_batch_at is None:
                            self.totals.first_batch_at = time.monotonic()
                        consistent = False
                        if transactional is not None:
                            transactional.begin()
                        again, live = checkpointer.replaying(records)
                        if again:  # outputs committed before the state was saved: learned again, not republished
                            self._replay(again, processor, sink)
                            checkpointer.advance(again)
                        self._apply_promotions(processor)  # inside the batch (and its transaction): audited
                        if quarantine.careful(live):
                            self._one_at_a_time(live, processor, quarantine)
                        else:
                            quarantine.batch_begins(live)
                            self.totals.add(processor.process(live))
                        checkpointer.advance(live)
                        sink.flush()  # 1. outputs acknowledged
                        consistent = True
                        # 2. at a save point: partition state, model state; 3. the offsets they reflect (with
                        # exactly_once: every batch's outputs and offsets in one transaction); when the group's
                        # update is due, this batch's save point is the one it needs (4. sends it)
                        if syncer is None or not self._send_update(syncer, checkpointer, transactional,
                                                                   batch_end=True):
                            checkpointer.end_batch()
                    elif checkpointer.due():  # the stream went quiet: its tail is saved and committed
                        checkpointer.save("interval")
                    if syncer is not None:  # 4. the group's rounds: merge what closed, send when due
                        self._sync(syncer, checkpointer, transactional)
                    self._backpressure(consumer)
                    self._update_lag(consumer)
            except KafkaAccessError as exc:
                # credentials rotated or revoked, ACLs changed: retrying cannot fix it. Keep the state if
                # it is consistent (outputs flushed), then stop with the reason.
                if consistent:
                    self._save_refused(checkpointer)
                credentials = ("kafka.sasl.oauth_token / oauth_token_file" if s.kafka.sasl.mechanism == "OAUTHBEARER"
                               else "kafka.sasl.username / password (or password_file)")
                raise KafkaSecurityError(
                    f"kafka: the brokers refused this service while it ran ({exc.kind}: {exc}); "
                    f"check {credentials} and the ACLs of the topics and the group") from None
            self._drain_training()
            # only reached on a graceful stop: everything is flushed. Draining may have changed the model
            # without a new record: save even if the last save point covered every record.
            checkpointer.save("shutdown", changed=self.trained is not None)
            if syncer is not None:
                syncer.leave()
            quarantine.clean_stop()
            self._graceful = True
        finally:
            self._running = False
            self.metrics.up.set(0)
            if syncer is not None:
                syncer.close()
            self._close(consumer, writer)
        t = self.totals
        log.info("stopped after %d batches: %d consumed, %d predicted, %d learned, %d dead-lettered",
                 t.batches, t.consumed, t.predicted, t.learned, t.dead_lettered)
        return self.totals

    def _sync(self, syncer: GroupSync, checkpointer: Checkpointer, transactional: TransactionalWriter | None) -> None:
        """The sync step: merge the rounds that closed (put off while the model trains a window, like a save
        point); send an update that is due (a batch's end sends it with its save point: here, when the stream is
        quiet)."""
        if not syncer.incoming():
            syncer.poll()  # (nothing new: closes the open round if it waited too long)
        elif checkpointer.between_windows("merge", self.settings.sync.every_seconds):
            try:
                syncer.poll()
            finally:
                checkpointer.release()
        self._send_update(syncer, checkpointer, transactional, batch_end=False)

    def _send_update(self, syncer: GroupSync, checkpointer: Checkpointer, transactional: TransactionalWriter | None,
                     *, batch_end: bool) -> bool:
        """When an update is due: a save point first (the update reflects only learning whose offsets are
        committed, and the checkpoint records the update, so a restart knows it was sent; with exactly_once, in
        the same transaction, or for a snapshot, right after it), then the update. At a batch's end
        (``batch_end``) that save point is the batch's. Whether an update was due."""
        if not syncer.due() or not checkpointer.between_windows("sync", self.settings.sync.every_seconds):
            return False  # (put off while the model trains a window: taken at a later batch's end)
        try:
            syncer.prepare()
            if transactional is not None and syncer.in_transaction:
                transactional.begin()  # (at a batch's end: the batch's, open already)
                syncer.send_update()
                checkpointer.save("sync", changed=True)  # commits the transaction, update included
                return True
            if syncer.labels_since() > 0:  # (nothing learned since the group's model: nothing uncommitted to send)
                checkpointer.save("sync", changed=True)
                if checkpointer.uncommitted:
                    return True  # sent at the next round, once its learning is committed
            elif batch_end:  # the batch's own save point, if one is due
                checkpointer.end_batch()
            syncer.send_update()
            return True
        finally:
            checkpointer.release()

    def _replay(self, records: Sequence[InboundRecord], processor: EventProcessor, sink: OutputSink) -> None:
        sink.muted = True
        try:
            result = processor.process(records)
        finally:
            sink.muted = False
        self.metrics.replayed.inc(result.consumed)

    def _transactional_id(self) -> str:
        """Stable across restarts of one instance (kafka.instance_id, else its checkpoint directory on this host),
        so a restart fences the process it replaces and aborts what that one left open at once; without either,
        this process's own."""
        return f"driftline-{self.settings.kafka.group_id}-{self._identity()}"

    def _identity(self) -> str:
        """This instance's name, stable across its restarts: kafka.instance_id, else a hash of its host and
        checkpoint directory; without either, this process's own."""
        s = self.settings
        if s.kafka.instance_id:
            return s.kafka.instance_id
        where = (f"{socket.gethostname()}:{os.path.abspath(s.checkpoint.directory)}" if s.checkpoint.directory
                 else f"{socket.gethostname()}:{os.getpid()}")
        return hashlib.sha256(where.encode()).hexdigest()[:16]

    def _one_at_a_time(self, records: Sequence[InboundRecord], processor: EventProcessor,
                       quarantine: Quarantine) -> None:
        """A batch the last process may have died on: each record on its own, the marker naming it; a record
        a process died with in hand this way is dead-lettered instead."""
        for rec in records:
            if quarantine.is_condemned(rec):
                self.totals.add(processor.set_aside(
                    rec, QUARANTINED, "a process of this service died while handling this record on its own; "
                    "it is not processed again (see the log of that process)"))
                continue
            quarantine.record_begins(rec)
            self.totals.add(processor.process([rec]))
        quarantine.records_done()

    def _changelog(self, writer: RecordWriter, want: int) -> Changelog:
        """The compacted topic partition state travels on, with the input's partition count (``want``)."""
        s, kafka = self.settings, self.kafka
        topic = s.partition_state_topic
        kafka.ensure_topics([topic], partitions=want, configs=COMPACTED)
        have = kafka.topic_partitions(topic)
        if have < want:
            raise ConfigError(f"topic {topic!r} (topics.partition_state) has {have} partitions, fewer than the "
                              f"input's {want}: each input partition's state needs its own; recreate it or name "
                              "another")
        return Changelog(topic, writer, functools.partial(read_partitions, s.kafka))

    def _save_refused(self, checkpointer: Checkpointer) -> None:
        """The brokers refused this service: keep the state (and commit, if they still take a commit)."""
        try:
            checkpointer.save("shutdown", changed=self.trained is not None)
        except KafkaClientError as exc:
            log.warning("kafka: the last save point's Kafka part failed (%s: %s)", exc.kind, exc)

    def _lost(self, partitions: Sequence[TopicPartition]) -> None:
        """This member was evicted from the group (a poll came later than kafka.max_poll_interval_ms, or
        heartbeats stopped, the coordinator was away): its partitions may belong to another member already,
        which resumes them from the last save point; nothing is written for them here. Their state is kept until
        the next assignment: back here with nothing committed meanwhile, they go on from this member's position
        (taken by another member, the events since the last save point are learned by both)."""
        self.metrics.kafka_errors.labels("rebalance", "partitions_lost").inc()
        log.warning("kafka: lost %d partitions without a revoke (this member was evicted from the group); "
                    "rejoining", len(partitions))
        self.checkpointer.lost(partitions)

    def _backpressure(self, consumer: Consumer) -> None:
        """Pause every assigned partition while the learner's training is behind (it keeps polling, so the
        group keeps this member; paused partitions return no records); resume when it has caught up."""
        trained = self.trained
        if trained is None:
            return
        if trained.saturated():
            unpaused = consumer.assignment() - consumer.paused()
            if unpaused:
                if not self._paused:
                    self.metrics.pauses.inc()
                    log.info("training is behind (%d windows waiting): pausing %d partitions",
                             trained.backlog(), len(unpaused))
                consumer.pause(unpaused)
                self._paused = True
                self.metrics.paused.set(1)
        elif self._paused:
            consumer.resume(consumer.paused())
            self._paused = False
            self.metrics.paused.set(0)
            log.info("training caught up: resuming")

    def _drain_training(self, timeout: float = 30.0) -> None:
        """On a graceful stop, let windows in training finish (what is left is in the shutdown checkpoint)."""
        trained = self.trained
        if trained is not None and not trained.drain(timeout):
            log.warning("training did not finish within %.0fs; the pending windows go into the checkpoint", timeout)

    def _commit(self, consumer: Consumer, offsets: Mapping[TopicPartition, int]) -> bool:
        """Commit the offsets a save point's state reflects, waiting for the broker; whether it did. A failed
        commit is retried a second later (or covered by the next save point's); until then a partition that
        moves resumes from the last commit (its events since are consumed again)."""
        try:
            consumer.commit(offsets)
        except (CommitLostError, RetriableKafkaError) as exc:
            # Either the group rebalanced while we processed (the partitions' new owner resumes from the last
            # commit), or Kafka is unreachable for now (broker restart, coordinator moving).
            self._retriable(exc)
            return False
        self._committed()
        return True

    def _commit_transaction(self, writer: TransactionalWriter, consumer: Consumer,
                            offsets: Mapping[TopicPartition, int]) -> bool:
        """kafka.exactly_once: commit the batch's transaction with these offsets. A failure is not retried here:
        Kafka discarded the batch's outputs while the model learned it, so the service stops (TransactionError)
        and its restart resumes from the last committed transaction."""
        writer.commit(offsets, consumer.group_metadata())
        self._committed()
        return True

    def _committed(self) -> None:
        self.totals.last_commit_at = time.monotonic()
        self.metrics.last_commit.set_to_current_time()

    def _retriable(self, exc: KafkaClientError) -> None:
        """A Kafka call failed in a way that a later retry can fix: count it, log it, carry on."""
        self.metrics.kafka_errors.labels(exc.operation, exc.kind).inc()
        log.warning("Kafka %s failed (%s: %s); retrying on the next round", exc.operation, exc.kind, exc)

    def _update_lag(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if now - self._lag_at < self.settings.metrics.lag_interval_s:
            return
        self._lag_at = now
        seen: set[tuple[str, str]] = set()
        try:
            lags = consumer.lag()
        except RetriableKafkaError as exc:
            self._retriable(exc)
            return
        for tp, lag in lags.items():
            key = (tp.topic, str(tp.partition))
            self.metrics.lag.labels(*key).set(lag)
            seen.add(key)
        for key in self._lag_keys - seen:
            self.metrics.lag.remove(*key)
        self._lag_keys = seen

    def _leave_group(self) -> None:
        """A static member that stopped gracefully leaves the group (kafka.leave_group_on_stop): a static
        member's close does not, and its partitions would wait session_timeout_ms for its return."""
        k = self.settings.kafka
        if not (self._graceful and k.instance_id and k.leave_group_on_stop):
            return
        try:
            self.kafka.leave_group(k.instance_id)
            log.info("left group %r (static member %s): its partitions move to the others now", k.group_id,
                     k.instance_id)
        except Exception as exc:  # its partitions then move after the session timeout
            log.warning("kafka: leaving group %r failed (%s: %s); its partitions move after "
                        "kafka.session_timeout_ms", k.group_id, type(exc).__name__, exc)

    def _revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions leave this member in a rebalance: saved and committed first. Not while the consumer closes
        (kafka-python revokes then): the shutdown save point stands, and after a fatal error nothing is saved."""
        if not self._closing:
            self.metrics.partitions_revoked.inc(len(partitions))
            self.checkpointer.revoked(partitions)

    def _close(self, consumer: Consumer, writer: RecordWriter) -> None:
        self._closing = True
        try:
            writer.close(timeout=30)
        finally:
            try:
                consumer.close()
            except Exception as exc:  # (an error of its own must not hide the one that stopped the service)
                log.warning("kafka: closing the consumer failed: %s: %s", type(exc).__name__, exc)
            self._leave_group()
            if self.live is not None:
                self.live.stop()
            if self.http is not None:
                self.http.stop()
            trained = self.trained
            if trained is not None:
                trained.close()
