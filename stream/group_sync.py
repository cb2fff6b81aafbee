"""The member's side of the group's model (``sync.mode``), wired to the sync topic and its cluster: `Syncer` for
``average``, `SnapshotSync` for ``ensemble``. The run loop drives whichever it gets through `GroupSync`."""

from __future__ import annotations

from collections.abc import Mapping

from driftline.errors import ConfigError, KafkaSecurityError
from driftline.learners.base import Learner
from driftline.learners.capabilities import mergeable
from driftline.learners.ensemble import GroupEnsemble, model_kind
from driftline.learners.registry import MERGEABLE_RIVER
from driftline.monitoring.metrics import ServiceMetrics
from driftline.secrecy import resolve
from driftline.settings import Settings
from driftline.stream.audit import AuditPublisher
from driftline.stream.kafka import open_backend
from driftline.stream.kafka.ranges import partition_reader
from driftline.stream.kafka.seam import KafkaBackend, TransactionalWriter
from driftline.stream.kafka.writer import RecordWriter
from driftline.stream.sink import OutputSink
from driftline.stream.snapshots import SnapshotSync, max_record_bytes, snapshot_topic_configs
from driftline.stream.sync import SYNC_TOPIC, GroupSync, Syncer, SyncState


def member_side(s: Settings, kafka: KafkaBackend, learner: Learner, *, member: str, state: SyncState | None,
                ensemble: GroupEnsemble | None, writer: RecordWriter, transactional: TransactionalWriter | None,
                sink: OutputSink, metrics: ServiceMetrics) -> GroupSync | None:
    """This member's side of ``s.sync.mode`` (None: none), its topic created on its cluster. ConfigError for a
    model the mode cannot take, or a sync cluster that refuses this member."""
    if state is not None:
        return _averaging(s, kafka, learner, member, state, writer, transactional, sink, metrics)
    if ensemble is not None:
        return _snapshots(s, kafka, member, ensemble, sink, metrics)
    return None


def _averaging(s: Settings, kafka: KafkaBackend, learner: Learner, member: str, state: SyncState,
               writer: RecordWriter, transactional: TransactionalWriter | None, sink: OutputSink,
               metrics: ServiceMetrics) -> Syncer:
    """sync.mode average: the member's side of the group's rounds, on the sync topic (one partition)."""
    model = mergeable(learner)
    if model is None:
        raise ConfigError(f"sync.mode {s.sync.mode}: model {learner.name} cannot be averaged (mergeable: "
                          f"{', '.join(sorted(MERGEABLE_RIVER))}, the torch heads TorchLinear, TorchMLP, and "
                          "Continual); use sync.mode ensemble for it, or none")
    cluster = _sync_cluster(s, kafka, SYNC_TOPIC)
    elsewhere = s.sync.kafka is not None
    # with exactly_once, the update is in the save point's transaction (on this cluster only); the other
    # records need none. On another cluster (sync.kafka), every record goes by a producer of that cluster.
    plain = cluster.writer() if transactional is not None or elsewhere else writer
    # a round is adopted between batches, outside any transaction: its audit record goes the plain way (on this
    # service's cluster: with the sync topic elsewhere, a producer of its own)
    audit_writer = kafka.writer() if transactional is not None and elsewhere else plain
    audit = AuditPublisher(sink if transactional is None else OutputSink(
        audit_writer, s.topics.predictions, s.topics.dead_letter, metrics), s.topics.audit)
    owned = ((plain,) if plain is not writer else ()) + ((audit_writer,) if audit_writer is not plain else ())
    return Syncer(s.sync, learner, model, state, topic=s.sync_topic, group=s.kafka.group_id,
                  member=member, writer=plain, update_writer=plain if elsewhere else writer,
                  owned=owned, in_transaction=transactional is not None and not elsewhere,
                  reader=partition_reader(s.sync.kafka or s.kafka), metrics=metrics.sync,
                  audit=audit.publish if s.topics.audit else None)


def _snapshots(s: Settings, kafka: KafkaBackend, member: str, ensemble: GroupEnsemble, sink: OutputSink,
               metrics: ServiceMetrics) -> SnapshotSync:
    """sync.mode ensemble: this member's snapshots out, the others' in, on the sync topic (one partition)."""
    key = resolve(s.sync.key, s.sync.key_file, "sync.key")
    assert key is not None  # required by the settings in ensemble mode
    assert ensemble.member == member
    cluster = _sync_cluster(s, kafka, snapshot_topic_configs(s.sync.max_snapshot_bytes))
    return SnapshotSync(s.sync, ensemble, key, topic=s.sync_topic, group=s.kafka.group_id,
                        kind=model_kind(ensemble.own),
                        writer=cluster.writer(max_record_bytes=max_record_bytes(s.sync.max_snapshot_bytes)),
                        reader=partition_reader(s.sync.kafka or s.kafka), metrics=metrics.sync,
                        audit=AuditPublisher(sink, s.topics.audit).publish if s.topics.audit else None)


def _sync_cluster(s: Settings, kafka: KafkaBackend, configs: Mapping[str, str]) -> KafkaBackend:
    """The cluster of the sync topic (``sync.kafka``, checked like the service's own at start; else the
    service's), with the topic created there (one partition) and known."""
    cluster = kafka
    if s.sync.kafka is not None:
        cluster = open_backend(s.sync.kafka)
        try:
            cluster.check_connection()  # a rejected certificate or password stops here
        except (ConfigError, KafkaSecurityError) as exc:
            raise type(exc)(f"sync.kafka (the sync topic's cluster, {s.sync.kafka.bootstrap_servers}): {exc}"
                            ) from None
    cluster.ensure_topics([s.sync_topic], partitions=1, configs=configs)
    cluster.topic_partitions(s.sync_topic)  # waits until a topic just created is known
    return cluster
