"""The seam between driftline and a Kafka client library: neutral partitions, errors, and the small
interfaces the run loop, the checkpointer and the CLI use. Backends (`stream.kafka.kafka_python`)
implement them; nothing outside `driftline.stream.kafka` imports a Kafka client.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import ClassVar, Literal, NamedTuple, Protocol

from driftline.errors import DriftlineError
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.records import InboundRecord

# How a group shares out partitions: "classic" (eager: a rebalance stops every partition of every member) or
# "consumer" (KIP-848: the broker assigns, and a rebalance stops only the partitions that move).
GroupProtocol = Literal["classic", "consumer"]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class KafkaClientError(DriftlineError):
    """A Kafka client call failed. ``operation`` names the call (poll, commit, position, ...), ``kind`` the
    client library's own error class (bounded: it is a metric label)."""

    retriable: ClassVar[bool] = False
    exit_code = 1  # what stops the service on its way out (an aborted transaction, ...): a restart may succeed

    def __init__(self, operation: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.kind = kind


class RetriableKafkaError(KafkaClientError):
    """Kafka is unreachable for now (broker restart, coordinator moving): the same call later may succeed."""

    retriable = True


class CommitLostError(RetriableKafkaError):
    """A commit raced a rebalance: the partitions' new owner resumes from the last successful commit."""


class KafkaAccessError(KafkaClientError):
    """The brokers refused this client while it ran (credentials rotated or revoked, ACLs changed): retrying
    cannot fix it."""


class FencedInstanceError(KafkaClientError):
    """Another process joined the group with this process's kafka.instance_id: ids must be unique per process.
    A restart would fence the other one in turn, so it exits 2 (fix the configuration)."""

    exit_code = 2


class TransactionError(KafkaClientError):
    """A transaction could not be committed (aborted, or this producer was fenced by a newer one with its id):
    the outputs and offsets of the batch are discarded by Kafka, while the model has learned it. The service
    stops; its restart resumes from the last committed transaction with the state that reflects it."""


Rebalance = Callable[[Sequence[TopicPartition]], None]


class Consumer(Protocol):
    """The service's group consumer. Offsets are committed only by `commit`, never automatically."""

    def subscribe(self, topics: Sequence[str], *, on_assign: Rebalance, on_revoke: Rebalance,
                  on_lost: Rebalance | None = None) -> None:
        """Join the group for ``topics``; ``on_assign``/``on_revoke`` run inside `poll` when partitions move
        (``on_revoke`` before they go: the previous batch is already processed and flushed; what it commits is
        the partitions' last commit by this member, nothing is committed for it).
        ``on_lost`` (default: ``on_revoke``) runs instead of ``on_revoke`` when the partitions are already
        gone: the member was evicted from the group (missed heartbeats, poll interval exceeded), so another
        member may own them now and no commit for them can succeed."""
        ...

    def poll(self, timeout_ms: int) -> list[InboundRecord]:
        """The next batch (possibly empty). Raises RetriableKafkaError or KafkaAccessError."""
        ...

    def assignment(self) -> set[TopicPartition]: ...

    def paused(self) -> set[TopicPartition]: ...

    def pause(self, partitions: Iterable[TopicPartition]) -> None: ...

    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offset of each partition (None: nothing committed). Raises RetriableKafkaError
        or KafkaAccessError."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int] | None = None, *, wait: bool = True) -> None:
        """Commit ``offsets`` (next offset to read, per partition), or every consumed position. Raises
        CommitLostError, RetriableKafkaError or KafkaAccessError. ``wait=False`` lets a backend send the commit
        without waiting for the broker's answer (a failure is raised by a later commit); a backend may wait
        anyway."""
        ...

    def lag(self) -> dict[TopicPartition, int]:
        """Records between the position and the log end of each assigned partition whose end is known."""
        ...

    def group_metadata(self) -> object:
        """The group's generation and member id, for a transaction's offsets (only backends with transactions)."""
        ...

    def close(self) -> None:
        """Leave the group without committing."""
        ...


class TransactionalWriter(RecordWriter, Protocol):
    """A writer whose records, with the consumer's offsets, are committed in one Kafka transaction."""

    def begin(self) -> None:
        """Open a transaction if none is open."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int], group: object) -> None:
        """Add ``offsets`` (the consumer ``group``'s, from `Consumer.group_metadata`) to the open transaction and
        commit it; raises TransactionError when Kafka aborted it."""
        ...


class KafkaBackend(Protocol):
    """Everything the service asks of Kafka, from one client library."""

    def check_connection(self) -> bool:
        """Connect once as the clients will; a refused certificate or password raises KafkaSecurityError."""
        ...

    def ensure_topics(self, topics: Collection[str], partitions: int = 1,
                      configs: Mapping[str, str] | None = None) -> None:
        """Create the topics that do not exist yet, with these topic ``configs`` (e.g. cleanup.policy)."""
        ...

    def topic_partitions(self, topic: str) -> int: ...

    def leave_group(self, instance_id: str) -> None:
        """Remove the static member ``instance_id`` from the group (its partitions move at once); KafkaClientError."""
        ...

    def consumer(self) -> Consumer: ...

    def writer(self, *, max_record_bytes: int | None = None) -> RecordWriter:
        """A producer; ``max_record_bytes``: one that sends records up to that size (the client's default is
        ~1 MB), in this process."""
        ...

    def transactional_writer(self, transactional_id: str) -> TransactionalWriter:
        """A writer for ``kafka.exactly_once``; ConfigError on a backend without transactions."""
        ...
