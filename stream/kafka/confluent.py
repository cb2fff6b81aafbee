"""The confluent-kafka (librdkafka) backend: `ConfluentConsumer`, `ConfluentWriter`, `ConfluentBackend`.

Settings are mapped to librdkafka's property names (`rdkafka.properties`); offsets are committed only
explicitly (auto commit and the automatic offset store are off), and the positions the service commits are
the ones it consumed. Seeks asked for while partitions are being assigned are applied with the assignment
itself (librdkafka cannot seek a partition it has not started fetching). Partitions lost without a revoke
(the member was evicted from the group) are handled like revoked ones: the service forgets their state, and
its next commit fails as lost to a rebalance. Nothing is committed on a revoke but what the service's own
handler commits. Access errors librdkafka reports through its error callback
(credentials or ACLs refused) are raised by the next poll.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as CTopicPartition

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings
from driftline.stream.kafka.kafka_python import KafkaAdmin
from driftline.stream.kafka.rdkafka import ACCESS_ERRORS, ClientErrors, properties
from driftline.stream.kafka.seam import (
    CommitLostError,
    FencedInstanceError,
    GroupProtocol,
    KafkaAccessError,
    KafkaClientError,
    Rebalance,
    RetriableKafkaError,
    TopicPartition,
    TransactionError,
)
from driftline.stream.kafka.writer import FlushResult, Headers
from driftline.stream.records import InboundRecord

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOST = {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
         KafkaError._STATE}


def _error(operation: str, err: KafkaError) -> KafkaClientError:
    code = err.code()
    kind = err.name()
    if code == KafkaError.FENCED_INSTANCE_ID:
        return FencedInstanceError(operation, kind, f"another process joined the group with this kafka.instance_id "
                                                    f"({err.str()}); instance ids must be unique per process")
    if code == KafkaError.UNRELEASED_INSTANCE_ID or (code == KafkaError._FATAL and "instance ID is still used" in
                                                     err.str()):
        return FencedInstanceError(operation, kind, f"the group still has a member with this kafka.instance_id "
                                                    f"({err.str()}): another running process, or this instance's "
                                                    "previous process if it crashed (on the consumer group protocol "
                                                    "the broker frees the id only when that member's session expires; "
                                                    "kafka.group_protocol classic lets a restarted member take it at "
                                                    "once); instance ids must be unique per process")
    if code in ACCESS_ERRORS:
        return KafkaAccessError(operation, kind, err.str())
    if code in _LOST:
        return CommitLostError(operation, kind, err.str())
    if err.fatal() and not err.retriable():
        return KafkaClientError(operation, kind, err.str())
    return RetriableKafkaError(operation, kind, err.str())


def _client(kind: Callable[[dict[str, Any]], T], config: dict[str, Any]) -> T:
    """A librdkafka client; a configuration it refuses is a ConfigError with its reason."""
    try:
        return kind(config)
    except (KafkaException, ValueError) as exc:
        reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
        raise ConfigError(f"kafka: librdkafka refused the configuration: {reason}") from None


def _raise_refused(errors: ClientErrors) -> None:
    """Raise what librdkafka's error callback kept since the last poll (credentials or ACLs refused)."""
    refused = errors.take()
    if refused is not None:
        raise _error("poll", refused)


def _records(msgs: list[Message], positions: dict[TopicPartition, int]) -> list[InboundRecord]:
    """The messages as records (librdkafka's end-of-partition events skipped, errors raised); ``positions`` gets
    each partition's next offset. Runs for every event: only the calls a record needs, and a partition's
    position written once per run of its messages."""
    out: list[InboundRecord] = []
    append = out.append
    run_topic, run_partition, run_offset = None, -1, -1
    for m in msgs:
        err = m.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            raise _error("poll", err)
        topic, partition, offset = cast(str, m.topic()), cast(int, m.partition()), cast(int, m.offset())
        if partition != run_partition or topic != run_topic:
            if run_topic is not None:
                positions[TopicPartition(run_topic, run_partition)] = run_offset + 1
            run_topic, run_partition = topic, partition
        run_offset = offset
        headers = cast(list[tuple[str, bytes | None]] | None, m.headers())  # a consumed message's: a list
        append(InboundRecord(topic, partition, offset, m.timestamp()[1], m.key(), m.value(),
                             tuple((k, v or b"") for k, v in headers) if headers else ()))
    if run_topic is not None:
        positions[TopicPartition(run_topic, run_partition)] = run_offset + 1
    return out


def group_properties(cfg: KafkaSettings, protocol: GroupProtocol) -> dict[str, Any]:
    """librdkafka's group settings for ``protocol``. Either way an event's partition and its label's stay on one
    member (the label join needs it): the classic range assignor, or the broker's range assignor (sticky, and
    co-partitioning) on the consumer protocol, whose timeouts are the group's, on the broker."""
    if protocol == "consumer":
        return {"group.protocol": "consumer", "group.remote.assignor": "range"}
    return {"group.protocol": "classic", "partition.assignment.strategy": "range",
            "session.timeout.ms": cfg.session_timeout_ms,
            **({"heartbeat.interval.ms": cfg.heartbeat_interval_ms} if cfg.heartbeat_interval_ms is not None else {})}


def set_group_timeouts(cfg: KafkaSettings) -> None:
    """Write the timeouts the configuration sets to the group's config (the consumer protocol keeps them on the
    broker). ConfigError when the broker refuses a value (outside its group.consumer.min/max bounds), the access
    error when the group's ALTER_CONFIGS is not granted."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]  # public names, re-exported implicitly
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    timeouts = sorted(cfg.group_timeouts.items())
    values = ", ".join(f"{k}={v}" for k, v in timeouts)
    entries = [ConfigEntry(name, str(value), incremental_operation=AlterConfigOpType.SET) for name, value in timeouts]
    admin = _client(AdminClient, properties(cfg, "admin"))
    resource = ConfigResource(ResourceType.GROUP, cfg.group_id, incremental_configs=entries)
    try:
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=cfg.request_timeout_ms / 1000)
    except KafkaException as exc:
        err: KafkaError = exc.args[0]
        if err.code() == KafkaError.INVALID_CONFIG:
            raise ConfigError(f"kafka: the broker refused the group's {values} (kafka.session_timeout_ms / "
                              f"heartbeat_interval_ms on the consumer group protocol): {err.str()}") from None
        raise _error("alter_group_configs", err) from exc
    log.info("kafka: group %r configured: %s", cfg.group_id, values)


class ConfluentConsumer:
    def __init__(self, cfg: KafkaSettings, protocol: GroupProtocol = "classic") -> None:
        self.cfg = cfg
        self.protocol = protocol
        self._errors = ClientErrors()
        self._c = _client(Consumer, {
            **properties(cfg, "consumer", self._errors), "group.id": cfg.group_id, "enable.auto.commit": False,
            "enable.auto.offset.store": False, "auto.offset.reset": cfg.auto_offset_reset,
            "max.poll.interval.ms": cfg.max_poll_interval_ms,
            "fetch.min.bytes": cfg.fetch_min_bytes, "fetch.wait.max.ms": cfg.fetch_max_wait_ms,
            "max.partition.fetch.bytes": cfg.max_partition_fetch_bytes, **group_properties(cfg, protocol),
            "on_commit": self._committed, **({"group.instance.id": cfg.instance_id} if cfg.instance_id else {}),
        })
        self._positions: dict[TopicPartition, int] = {}
        self._commit_failed: KafkaError | None = None
        self._paused: set[TopicPartition] = set()
        self._seeks: dict[TopicPartition, int] | None = None  # collected while an assignment is applied

    def subscribe(self, topics: Sequence[str], *, on_assign: Rebalance, on_revoke: Rebalance,
                  on_lost: Rebalance | None = None) -> None:
        """On the classic protocol a rebalance takes every partition away and hands out the whole new assignment;
        on the consumer protocol the callbacks get only the partitions that come or go (the others keep
        flowing), so they are added and removed incrementally."""
        incremental = self.protocol == "consumer"

        def assigned(consumer: Any, parts: list[CTopicPartition]) -> None:
            self._seeks = {}
            try:
                on_assign([TopicPartition(p.topic, p.partition) for p in parts])
                seeks = self._seeks
            finally:
                self._seeks = None
            start = [CTopicPartition(p.topic, p.partition,
                                     seeks.get(TopicPartition(p.topic, p.partition), OFFSET_INVALID)) for p in parts]
            if incremental:
                consumer.incremental_assign(start)
            else:
                consumer.assign(start)

        def gone(handler: Rebalance) -> Callable[[Any, list[CTopicPartition]], None]:
            def handle(consumer: Any, parts: list[CTopicPartition]) -> None:
                tps = [TopicPartition(p.topic, p.partition) for p in parts]
                try:
                    handler(tps)
                finally:
                    for tp in tps:
                        self._positions.pop(tp, None)
                        self._paused.discard(tp)
                    if incremental:
                        consumer.incremental_unassign(parts)
                    else:
                        consumer.unassign()
            return handle

        self._c.subscribe(list(topics), on_assign=assigned, on_revoke=gone(on_revoke),
                          on_lost=gone(on_lost or on_revoke))

    def poll(self, timeout_ms: int) -> list[InboundRecord]:
        """What is fetched already, up to max_poll_records; when nothing is, wait up to ``timeout_ms`` for the
        first record and take what came with it. (librdkafka's consume() waits for a full batch or the
        timeout: at 10,000 events/s a 1,000-record batch would hold its first record for 100 ms.)"""
        consume, most = self._c.consume, self.cfg.max_poll_records
        try:
            msgs: list[Message] = consume(num_messages=most, timeout=0)
            if not msgs:
                msgs = consume(num_messages=1, timeout=timeout_ms / 1000)
                if msgs and most > 1:
                    msgs += consume(num_messages=most - 1, timeout=0)
        except KafkaException as exc:
            _raise_refused(self._errors)  # the reason librdkafka gave its error callback, when it is more precise
            raise _error("poll", exc.args[0]) from exc
        _raise_refused(self._errors)
        return _records(msgs, self._positions)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(p.topic, p.partition) for p in self._c.assignment()}

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        tps = list(partitions)
        self._c.pause([CTopicPartition(t, p) for t, p in tps])
        self._paused |= set(tps)

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        tps = list(partitions)
        self._c.resume([CTopicPartition(t, p) for t, p in tps])
        self._paused -= set(tps)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        if self._seeks is not None:  # inside on_assign: applied with the assignment
            self._seeks[partition] = offset
        else:
            self._c.seek(CTopicPartition(partition.topic, partition.partition, offset))
        self._positions[partition] = offset

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        try:
            found = self._c.committed([CTopicPartition(t, p) for t, p in partitions],
                                      timeout=self.cfg.request_timeout_ms / 1000)
        except KafkaException as exc:
            raise _error("committed", exc.args[0]) from exc
        return {TopicPartition(f.topic, f.partition): (f.offset if f.offset >= 0 else None) for f in found}

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None, *, wait: bool = True) -> None:
        chosen = dict(offsets if offsets is not None else self._positions)
        if chosen:
            try:
                parts = [CTopicPartition(t, p, o) for (t, p), o in chosen.items()]
                if wait:
                    self._c.commit(offsets=parts, asynchronous=False)
                else:
                    self._c.commit(offsets=parts, asynchronous=True)
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.code() != KafkaError._NO_OFFSET:
                    raise _error("commit", err) from exc
        failed, self._commit_failed = self._commit_failed, None  # an earlier commit sent without waiting
        if failed is not None:
            raise _error("commit", failed)

    def _committed(self, err: KafkaError | None, _parts: list[CTopicPartition]) -> None:
        """librdkafka's on_commit (served by consume): keeps the failure of a commit sent without waiting."""
        if err is not None and err.code() != KafkaError._NO_OFFSET:
            self._commit_failed = err

    def lag(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp in self.assignment():
            try:
                _, high = self._c.get_watermark_offsets(CTopicPartition(tp.topic, tp.partition), cached=True)
            except KafkaException as exc:
                raise _error("position", exc.args[0]) from exc
            position = self._positions.get(tp)
            if high < 0 or position is None:
                continue
            out[tp] = max(high - position, 0)
        return out

    def group_metadata(self) -> object:
        return self._c.consumer_group_metadata()

    def close(self) -> None:
        self._c.close()


class ConfluentWriter:
    """A librdkafka producer: sends are queued in C and acknowledged through delivery reports."""

    def __init__(self, cfg: KafkaSettings, client_suffix: str = "producer", *,
                 transactional_id: str | None = None, max_record_bytes: int | None = None) -> None:
        acks = {"all": "all", "1": "1", "0": "0"}[cfg.acks]
        transactions: dict[str, Any] = ({"transactional.id": transactional_id,
                                         "transaction.timeout.ms": cfg.transaction_timeout_ms}
                                        if transactional_id is not None else {})
        self._timeout = cfg.request_timeout_ms / 1000
        self._p = _client(Producer, {
            **properties(cfg, client_suffix, ClientErrors()), **transactions,
            "acks": acks, "enable.idempotence": acks == "all",
            "linger.ms": cfg.linger_ms, "batch.size": cfg.batch_size,
            "compression.type": cfg.compression_type or "none", "request.timeout.ms": cfg.request_timeout_ms,
            # one Python callback per failed record only (a callback per record costs ~1 us of the event path)
            "delivery.report.only.error": True, "on_delivery": self._delivered,
            **({"message.max.bytes": max_record_bytes} if max_record_bytes is not None else {}),
        })
        self._produce = self._p.produce
        self._failed: dict[str, list[str]] = {}
        self._sent = 0
        self._partitions: dict[str, int] = {}
        self._open = False  # a transaction is open
        if transactional_id is not None:  # fences an older producer with this id, aborting what it left open
            self._transaction("init", self._p.init_transactions, self._timeout)

    def _transaction(self, operation: str, call: Callable[..., Any], *args: Any) -> None:
        """A transactional call, retried while librdkafka says a retry may succeed (until request_timeout_ms)."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                call(*args)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    continue
                if err.txn_requires_abort():
                    self._p.abort_transaction(self._timeout)
                    self._open = False
                raise TransactionError(operation, err.name(), f"transaction {operation} failed: {err.str()}") from None

    def begin(self) -> None:
        if not self._open:
            self._transaction("begin", self._p.begin_transaction)
            self._open = True

    def commit(self, offsets: Mapping[TopicPartition, int], group: object) -> None:
        self.begin()
        parts = [CTopicPartition(t, p, o) for (t, p), o in offsets.items()]
        if parts:
            self._transaction("send_offsets", self._p.send_offsets_to_transaction, parts, group, self._timeout)
        self._transaction("commit", self._p.commit_transaction, self._timeout)
        self._open = False
        self._sent = 0

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:  # only failures are reported (delivery.report.only.error)
            self._failed.setdefault(msg.topic() or "?", []).append(f"{err.name()}: {err.str()}")

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             headers: Headers = None) -> None:
        try:
            if headers:
                self._produce(topic, value, key, -1 if partition is None else partition, headers=list(headers))
            else:
                self._produce(topic, value, key, -1 if partition is None else partition)
        except BufferError:  # the local queue is full: serve delivery reports, then retry
            self._p.poll(0.05)
            self.send(topic, key, value, partition, headers)
            return
        except KafkaException as exc:  # refused at once, e.g. a record larger than message.max.bytes
            err: KafkaError = exc.args[0]
            self._failed.setdefault(topic, []).append(f"{err.name()}: {err.str()}")
        self._sent += 1

    def flush(self, timeout: float | None = None) -> FlushResult:
        left = self._p.flush(timeout if timeout is not None else -1)
        if left:
            self._failed.setdefault("?", []).append(f"{left} records not acknowledged within {timeout}s")
        result = FlushResult(sent=self._sent, failed=self._failed)
        self._failed, self._sent = {}, 0
        return result

    def partitions_for(self, topic: str) -> int:
        if topic not in self._partitions:
            deadline = time.monotonic() + 30
            while True:
                meta = self._p.list_topics(topic, timeout=10).topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    self._partitions[topic] = len(meta.partitions)
                    break
                if time.monotonic() > deadline:
                    raise ConfigError(f"topic {topic!r} has no partitions (does it exist?)")
                time.sleep(0.2)
        return self._partitions[topic]

    def close(self, timeout: float = 30.0) -> None:
        self._p.flush(timeout)


# ConsumerGroupHeartbeat: a broker that lists it in its API versions runs the consumer group protocol (KIP-848)
CONSUMER_GROUP_HEARTBEAT = 68


class ConfluentBackend(KafkaAdmin):
    def __init__(self, cfg: KafkaSettings) -> None:
        properties(cfg, "check")  # unreadable secret files and refused client properties fail here, at start
        super().__init__(cfg)

    def group_protocol(self) -> GroupProtocol:
        """kafka.group_protocol; auto: the consumer protocol when the broker offers it, the member is dynamic and
        outputs are not transactional (a rebalance that bumps the member's epoch fails a transaction's offsets).
        A static member stays classic: on the consumer protocol a member restarted after a crash is refused its
        instance id (UNRELEASED_INSTANCE_ID) until the broker expires the dead one's session, where the classic
        protocol hands it back its partitions at once (measured on Kafka 4.2 with librdkafka 2.16)."""
        chosen = self.cfg.group_protocol
        if chosen != "auto":
            return chosen
        if self.cfg.instance_id:
            log.info("kafka: classic group protocol (kafka.instance_id is set: a restarted static member takes its "
                     "partitions back at once)")
            return "classic"
        if self.cfg.exactly_once:
            log.info("kafka: classic group protocol (kafka.exactly_once: on the consumer protocol a rebalance can "
                     "fail a transaction's offsets with ILLEGAL_GENERATION)")
            return "classic"
        if not self.checked:  # the run loop's preflight has normally asked already
            self.check_connection()
        if self.broker_apis is None:
            log.warning("kafka: classic group protocol (the broker did not answer at start; kafka.group_protocol "
                        "consumer chooses the new one regardless)")
            return "classic"
        if CONSUMER_GROUP_HEARTBEAT not in self.broker_apis:
            log.info("kafka: classic group protocol (the broker does not offer the consumer protocol, KIP-848)")
            return "classic"
        log.info("kafka: consumer group protocol (KIP-848): a rebalance stops only the partitions that move")
        return "consumer"

    def consumer(self) -> ConfluentConsumer:
        protocol = self.group_protocol()
        if protocol == "consumer" and self.cfg.group_timeouts:
            set_group_timeouts(self.cfg)
        return ConfluentConsumer(self.cfg, protocol)

    def writer(self, *, max_record_bytes: int | None = None) -> ConfluentWriter:
        return ConfluentWriter(self.cfg, max_record_bytes=max_record_bytes)

    def transactional_writer(self, transactional_id: str) -> ConfluentWriter:
        return ConfluentWriter(self.cfg, transactional_id=transactional_id)


class ConfluentPartitionReader:
    """`ranges.PartitionReader` on librdkafka: partitions assigned directly (the group id is only a name here:
    nothing is committed and no group is joined)."""

    def __init__(self, cfg: KafkaSettings) -> None:
        self._timeout = cfg.request_timeout_ms / 1000
        self._errors = ClientErrors()
        self._c = _client(Consumer, {**properties(cfg, "range", self._errors), "group.id": f"{cfg.client_id}-range",
                                     "enable.auto.commit": False, "enable.auto.offset.store": False})

    def _call(self, operation: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except KafkaException as exc:
            raise _error(operation, exc.args[0]) from exc

    def partitions(self, topic: str) -> list[int]:
        meta = self._call("metadata", lambda: self._c.list_topics(topic, timeout=self._timeout)).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def bounds(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        out: dict[TopicPartition, tuple[int, int]] = {}
        for tp in tps:
            low, high = self._call("offsets", functools.partial(
                self._c.get_watermark_offsets, CTopicPartition(tp.topic, tp.partition), timeout=self._timeout))
            out[tp] = (int(low), int(high))
        return out

    def offsets_for_time(self, tps: Sequence[TopicPartition], ms: int) -> dict[TopicPartition, int | None]:
        found = self._call("offsets", lambda: self._c.offsets_for_times(
            [CTopicPartition(tp.topic, tp.partition, ms) for tp in tps], timeout=self._timeout))
        return {TopicPartition(f.topic, f.partition): (f.offset if f.offset >= 0 else None) for f in found}

    def start(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._c.assign([CTopicPartition(tp.topic, tp.partition, off) for tp, off in offsets.items()])

    def poll(self, timeout_s: float) -> list[InboundRecord]:
        msgs = self._call("poll", lambda: self._c.consume(num_messages=10_000, timeout=timeout_s))
        _raise_refused(self._errors)
        return _records(msgs, {})  # the reader keeps no positions

    def position(self, tp: TopicPartition) -> int:
        pos = self._call("position", lambda: self._c.position([CTopicPartition(tp.topic, tp.partition)]))
        return int(pos[0].offset)

    def close(self) -> None:
        self._c.close()
