"""The kafka-python backend: `KafkaPythonConsumer` and `KafkaPythonBackend` (client errors mapped to the
seam's: retriable, commit lost to a rebalance, access refused)."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata
from kafka import TopicPartition as KafkaTopicPartition
from kafka.errors import (
    AuthorizationError,
    CommitFailedError,
    FencedInstanceIdError,
    IllegalGenerationError,
    RebalanceInProgressError,
    RetriableError,
    SaslAuthenticationFailedError,
    UnknownMemberIdError,
)

from driftline.errors import ConfigError
from driftline.settings import KafkaSettings
from driftline.stream.kafka.clients import ensure_topics, leave_group, make_consumer, topic_partitions
from driftline.stream.kafka.preflight import broker_apis
from driftline.stream.kafka.seam import (
    CommitLostError,
    FencedInstanceError,
    KafkaAccessError,
    Rebalance,
    RetriableKafkaError,
    TopicPartition,
    TransactionalWriter,
)
from driftline.stream.kafka.writer import RecordWriter, ThreadWriter, make_writer
from driftline.stream.records import InboundRecord

_LOST = (CommitFailedError, RebalanceInProgressError, UnknownMemberIdError, IllegalGenerationError)


@contextmanager
def _mapped(operation: str) -> Iterator[None]:
    try:
        yield
    except (SaslAuthenticationFailedError, AuthorizationError) as exc:
        raise KafkaAccessError(operation, type(exc).__name__, str(exc)) from exc
    except FencedInstanceIdError as exc:
        raise FencedInstanceError(operation, type(exc).__name__, f"another process joined the group with this "
                                  f"kafka.instance_id ({exc}); instance ids must be unique per process") from exc
    except _LOST as exc:
        raise CommitLostError(operation, type(exc).__name__, str(exc)) from exc
    except RetriableError as exc:
        raise RetriableKafkaError(operation, type(exc).__name__, str(exc)) from exc


def _tp(tp: KafkaTopicPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _ktp(tp: TopicPartition) -> KafkaTopicPartition:
    return KafkaTopicPartition(tp.topic, tp.partition)


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python 3 calls rebalance listeners on its IO thread, where a blocking call of the same consumer
    (``committed``, ``commit``: what the service's handlers do) is refused. Each handler runs on a worker thread
    instead (the service's own thread is blocked in ``poll`` meanwhile, so nothing else touches its state),
    while the listener yields to the IO loop (heartbeats, and the handler's own requests) until it is done."""

    def __init__(self, net: Any, on_assign: Rebalance, on_revoke: Rebalance, on_lost: Rebalance) -> None:
        self._net = net
        self.on_assign = on_assign
        self.on_revoke = on_revoke
        self.on_lost = on_lost

    async def on_partitions_revoked(self, revoked: list[KafkaTopicPartition]) -> None:
        await self._off_loop(self.on_revoke, revoked)

    async def on_partitions_lost(self, lost: list[KafkaTopicPartition]) -> None:
        await self._off_loop(self.on_lost, lost)

    async def on_partitions_assigned(self, assigned: list[KafkaTopicPartition]) -> None:
        await self._off_loop(self.on_assign, assigned)

    async def _off_loop(self, handler: Rebalance, partitions: list[KafkaTopicPartition]) -> None:
        done = threading.Event()
        failed: list[BaseException] = []

        def work() -> None:
            try:
                handler([_tp(tp) for tp in partitions])
            except BaseException as exc:  # re-raised on the IO loop: kafka-python reports it from poll
                failed.append(exc)
            finally:
                done.set()

        threading.Thread(target=work, name="driftline-rebalance", daemon=True).start()
        while not done.is_set():
            await self._net.sleep(0.002)
        if failed:
            raise failed[0]


class KafkaPythonConsumer:
    def __init__(self, consumer: KafkaConsumer) -> None:
        self._c = consumer

    def subscribe(self, topics: Sequence[str], *, on_assign: Rebalance, on_revoke: Rebalance,
                  on_lost: Rebalance | None = None) -> None:
        # kafka-python's event loop (no public accessor): the listener yields to it while a handler runs
        listener = _Listener(self._c._net, on_assign, on_revoke, on_lost or on_revoke)
        self._c.subscribe(list(topics), listener=listener)

    def poll(self, timeout_ms: int) -> list[InboundRecord]:
        with _mapped("poll"):
            batch = self._c.poll(timeout_ms=timeout_ms)
        return [InboundRecord.from_kafka(r) for recs in batch.values() for r in recs]

    def assignment(self) -> set[TopicPartition]:
        return {_tp(tp) for tp in self._c.assignment()}

    def paused(self) -> set[TopicPartition]:
        return {_tp(tp) for tp in self._c.paused()}

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._c.pause(*(_ktp(tp) for tp in partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._c.resume(*(_ktp(tp) for tp in partitions))

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._c.seek(_ktp(partition), offset)

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        with _mapped("committed"):
            return {tp: self._c.committed(_ktp(tp)) for tp in partitions}

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None, *, wait: bool = True) -> None:
        """Always waits for the broker (kafka-python's asynchronous commits need its poll to complete)."""
        with _mapped("commit"):
            if offsets is None:
                self._c.commit()  # positions = one past the last record of the processed batch
            else:
                self._c.commit({_ktp(tp): OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})

    def lag(self) -> dict[TopicPartition, int]:
        out: dict[TopicPartition, int] = {}
        for tp in self._c.assignment():
            hw = self._c.highwater(tp)
            if hw is None:
                continue
            with _mapped("position"):
                out[_tp(tp)] = max(hw - self._c.position(tp), 0)
        return out

    def group_metadata(self) -> object:
        raise ConfigError("kafka-python's backend has no transactions (kafka.exactly_once needs confluent)")

    def close(self) -> None:
        self._c.close(autocommit=False)


class KafkaAdmin:
    """Preflight and topics through kafka-python's protocol classes and admin client (what both backends use:
    the preflight checks what either client will meet)."""

    def __init__(self, cfg: KafkaSettings) -> None:
        self.cfg = cfg
        self.broker_apis: dict[int, tuple[int, int]] | None = None  # from the preflight: API key -> versions
        self.checked = False  # whether the preflight ran (broker_apis stays None when no broker answered)

    def check_connection(self) -> bool:
        self.broker_apis = broker_apis(self.cfg)
        self.checked = True
        return self.broker_apis is not None

    def ensure_topics(self, topics: Collection[str], partitions: int = 1,
                      configs: Mapping[str, str] | None = None) -> None:
        ensure_topics(self.cfg, topics, partitions=partitions, configs=configs)

    def topic_partitions(self, topic: str) -> int:
        return topic_partitions(self.cfg, topic)

    def leave_group(self, instance_id: str) -> None:
        with _mapped("leave_group"):
            leave_group(self.cfg, instance_id)


class KafkaPythonBackend(KafkaAdmin):
    def consumer(self) -> KafkaPythonConsumer:
        static = {"group_instance_id": self.cfg.instance_id} if self.cfg.instance_id else {}
        return KafkaPythonConsumer(make_consumer(self.cfg, **static))

    def writer(self, *, max_record_bytes: int | None = None) -> RecordWriter:
        if max_record_bytes is not None:
            return ThreadWriter(self.cfg, "large", max_request_size=max_record_bytes + 65_536)
        return make_writer(self.cfg)

    def transactional_writer(self, transactional_id: str) -> TransactionalWriter:
        raise ConfigError("kafka.exactly_once needs kafka.client: confluent (librdkafka)")


class KafkaPythonPartitionReader:
    """`ranges.PartitionReader` on kafka-python."""

    def __init__(self, cfg: KafkaSettings) -> None:
        self._c = make_consumer(cfg, client_id=f"{cfg.client_id}-range", group_id=None)

    def partitions(self, topic: str) -> list[int]:
        return sorted(self._c.partitions_for_topic(topic) or ())

    def bounds(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
        ktps = [_ktp(tp) for tp in tps]
        begin, end = self._c.beginning_offsets(ktps), self._c.end_offsets(ktps)
        return {_tp(k): (begin[k], end[k]) for k in ktps}

    def offsets_for_time(self, tps: Sequence[TopicPartition], ms: int) -> dict[TopicPartition, int | None]:
        found = self._c.offsets_for_times({_ktp(tp): ms for tp in tps})
        return {_tp(k): (v.offset if v is not None else None) for k, v in found.items()}

    def start(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._c.assign([_ktp(tp) for tp in offsets])
        for tp, off in offsets.items():
            self._c.seek(_ktp(tp), off)

    def poll(self, timeout_s: float) -> list[InboundRecord]:
        batch = self._c.poll(timeout_ms=int(timeout_s * 1000))
        return [InboundRecord.from_kafka(r) for recs in batch.values() for r in recs]

    def position(self, tp: TopicPartition) -> int:
        return int(self._c.position(_ktp(tp)))

    def close(self) -> None:
        self._c.close()
