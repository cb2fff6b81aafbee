"""The service's Prometheus metrics, created on a registry passed in (never the global one).

Names carry the ``driftline_`` prefix and their unit; label values are bounded (outcomes,
reason codes, model names, topic/partition), never event ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from driftline import __version__
from driftline.monitoring.collectors import GpuCollector, ModelCollector
from driftline.monitoring.histogram import FastHistogram

# Per-event latencies of in-process work: microseconds to a second.
_FAST_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 0.5, 1.0)
# End-to-end: event timestamp to prediction published.
_E2E_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

OUTCOMES = ("consumed", "predicted", "learned", "dead_lettered")


class ServiceMetrics:
    """Every metric of the service. Each has one writer: the pipeline's parts (processor, observers,
    sink, checkpointer) and the run loop push what they own; what is read at scrape time (model
    version and updates, training backlog, GPU) is collected then (`monitoring.collectors`)."""

    def __init__(self, registry: CollectorRegistry, model: str, task: str) -> None:
        self.registry = registry
        self.model = model
        self.events = Counter(
            "driftline_events", "Events by outcome.", ["outcome"], registry=registry
        )
        for outcome in OUTCOMES:
            self.events.labels(outcome)
        self.dead_letters = Counter(
            "driftline_dead_letters", "Records sent to the dead-letter topic, by reason.", ["reason"],
            registry=registry,
        )
        self.publish_errors = Counter(
            "driftline_output_publish_errors", "Output records Kafka did not acknowledge.", ["topic"],
            registry=registry,
        )
        self.accuracy = Gauge(
            "driftline_prequential_accuracy_ratio",
            "Prequential accuracy (prediction made before the label was learned).",
            ["model", "window"], registry=registry,
        )
        self.mae = Gauge("driftline_prequential_mae", "Prequential mean absolute error.", ["model", "window"],
                         registry=registry)
        self.rmse = Gauge("driftline_prequential_rmse", "Prequential root mean squared error.",
                          ["model", "window"], registry=registry)
        self.labeled = Counter("driftline_labeled_events", "Events whose label was scored.", ["model"],
                               registry=registry)
        self.label_coverage = Gauge("driftline_label_coverage_ratio",
                                    "Labeled events / predicted events (cumulative, checkpointed).", ["model"],
                                    registry=registry)
        self.pending_labels = Gauge("driftline_pending_labels",
                                    "Delayed-label join: predictions waiting for a label, labels waiting for "
                                    "their event.", ["side"], registry=registry)
        self.drift_detections = Counter("driftline_drift_detections",
                                        "Drift detector signals, by model, detector and level (warning, drift).",
                                        ["model", "detector", "level"], registry=registry)
        registry.register(GpuCollector())
        self.adaptations = Counter("driftline_adaptations",
                                   "Adaptation actions (a policy of the ladder, rollback, or none when no rung "
                                   "could act), by model and the detector that triggered them.",
                                   ["model", "detector", "action"],
                                   registry=registry)
        # champion and challengers (models: ...): who serves, each change, and what a challenger failed at
        self.serving = Gauge("driftline_model_serving", "1 for the model whose predictions are served (the "
                             "champion), 0 for each challenger.", ["model"], registry=registry)
        self.promotions = Counter("driftline_promotions", "Changes of champion, by the model promoted and why "
                                  "(test: the paired test; manual).", ["model", "reason"], registry=registry)
        self.challenger_errors = Counter("driftline_challenger_errors", "Events a challenger failed to predict or "
                                         "learn (the served prediction is unaffected), by model and stage.",
                                         ["model", "stage"], registry=registry)
        self.labels_expired = Counter("driftline_labels_expired",
                                      "Predictions that never got a label, by reason (ttl, capacity).", ["reason"],
                                      registry=registry)
        self.predict_latency = FastHistogram(
            "driftline_predict_latency_seconds", "Time to predict one event.", ["model"],
            buckets=_FAST_BUCKETS, registry=registry,
        )
        self.learn_latency = FastHistogram(
            "driftline_learn_latency_seconds", "Time to learn one labeled event.", ["model"],
            buckets=_FAST_BUCKETS, registry=registry,
        )
        self.prepare_latency = FastHistogram(
            "driftline_backbone_batch_seconds",
            "Time to prepare one consumed batch for the learner (batched backbone inference).", ["model"],
            buckets=_E2E_BUCKETS, registry=registry,
        )
        self.label_delay = FastHistogram(
            "driftline_label_delay_seconds",
            "From an event's Kafka timestamp to its label's (labels joined from the labels topic).",
            buckets=(0.1, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0),
            registry=registry,
        )
        self.e2e_latency = FastHistogram(
            "driftline_end_to_end_latency_seconds",
            "From the event's Kafka timestamp to its prediction acknowledged by Kafka.",
            buckets=_E2E_BUCKETS, registry=registry,
        )
        self.batch_size = Histogram(
            "driftline_batch_records", "Records per consumed batch.",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000), registry=registry,
        )
        self.lag = Gauge(
            "driftline_consumer_lag_records", "Records between the consumer position and the log end.",
            ["topic", "partition"], registry=registry,
        )
        # model version, updates and training backlog: read from the model at scrape time (the pipeline sets
        # the source); never pushed
        self.model_status = ModelCollector()
        registry.register(self.model_status)
        self.info = Info("driftline_build", "driftline version and model.", registry=registry)
        self.info.info({"version": __version__, "model": model, "task": task})
        self.last_commit = Gauge(
            "driftline_last_commit_timestamp_seconds", "Unix time of the last offset commit.", registry=registry
        )
        self.kafka_errors = Counter(
            "driftline_kafka_retriable_errors",
            "Kafka calls of the run loop that failed with a retriable error (retried on the next round).",
            ["operation", "error"], registry=registry,
        )
        self.up = Gauge("driftline_up", "1 while the run loop is alive.", registry=registry)
        # learners that train off the poll loop (Continual): back-pressure
        self.paused = Gauge("driftline_consumer_paused",
                            "1 while the consumer's partitions are paused because training is behind.",
                            registry=registry)
        self.pauses = Counter("driftline_backpressure_pauses",
                              "Times the consumer paused its partitions for training to catch up.",
                              registry=registry)
        self.checkpoint_duration = Histogram(
            "driftline_checkpoint_duration_seconds", "Time to write one checkpoint (state + offsets, fsynced).",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0), registry=registry,
        )
        self.checkpoints = Counter("driftline_checkpoints", "Checkpoints written, by trigger.", ["trigger"],
                                   registry=registry)
        self.checkpoint_deferrals = Counter(
            "driftline_checkpoint_deferrals",
            "Due save points put off to a later batch's end because the model was training a window in the "
            "background (Continual): the loop does not wait for it. By trigger: interval, sync (the group's "
            "update), merge (a round's merge).", ["trigger"], registry=registry)
        self.checkpoint_last = Gauge("driftline_checkpoint_last_timestamp_seconds",
                                     "Unix time of the last checkpoint written.", registry=registry)
        self.checkpoint_bytes = Gauge("driftline_checkpoint_size_bytes", "Size of the last checkpoint.",
                                      registry=registry)
        self.checkpoint_corrupt = Counter(
            "driftline_checkpoint_corrupt", "Unreadable checkpoints skipped at restore (corrupt or truncated).",
            registry=registry,
        )
        # partitions taken over: where their state came from (checkpoint: this instance's own; changelog: the
        # last owner's snapshot; none: started from the group's committed offset without pending joins)
        self.partition_assignments = Counter(
            "driftline_partition_assignments", "Input partitions assigned to this member, by where their state "
            "came from.", ["state"], registry=registry)
        for source in ("checkpoint", "changelog", "none"):
            self.partition_assignments.labels(source)
        # partitions (input and labels topics) taken from this member in rebalances: on the classic group protocol
        # every rebalance takes all of them, on the consumer protocol (KIP-848) only those that move
        self.partitions_revoked = Counter(
            "driftline_partitions_revoked", "Partitions (input and labels topics) revoked from this member in "
            "rebalances.", registry=registry)
        self.replayed = Counter(
            "driftline_replayed_events", "Events learned again without outputs after a restart or a move "
            "(kafka.exactly_once: their outputs were committed by a transaction after the state was saved).",
            registry=registry)
        self.partition_state_bytes = Counter(
            "driftline_partition_state_written_bytes", "Bytes of partition snapshots written to the changelog topic.",
            registry=registry)
        self.checkpoint_restored = Gauge("driftline_checkpoint_restored_version",
                                         "Checkpoint version restored at start (0: none).", registry=registry)
        self.sync = SyncMetrics(registry)


_MERGE_BUCKETS = (1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
_NORM_BUCKETS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


class SyncMetrics:
    """``sync.mode`` average: the group's rounds (`driftline.stream.sync`); ensemble: the snapshots
    (`driftline.stream.snapshots`: round = snapshots this member sent, round_members = members in its vote,
    merge_seconds = time to verify and load a snapshot, last adopted = the last snapshot loaded)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rounds = Counter("driftline_sync_rounds", "Sync rounds this member merged, by how they closed "
                              "(complete: every expected member sent; timed_out: closed without some).", ["closed"],
                              registry=registry)
        for how in ("complete", "timed_out"):
            self.rounds.labels(how)
        self.round = Gauge("driftline_sync_round", "The last merged round this member adopted (the group model's "
                           "version).", registry=registry)
        self.members = Gauge("driftline_sync_round_members", "Members whose updates made the last round.",
                             registry=registry)
        self.updates = Counter("driftline_sync_updates", "Updates (ensemble: snapshots) this member sent, by what "
                               "became of them (merged; stale: its round had closed without it, its learning goes "
                               "into the next; too_large: a snapshot over sync.max_snapshot_bytes, not sent).",
                               ["outcome"], registry=registry)
        for outcome in ("sent", "merged", "stale", "too_large"):
            self.updates.labels(outcome)
        self.bytes = Counter("driftline_sync_bytes", "Bytes of sync records, by direction.", ["direction"],
                             registry=registry)
        for direction in ("sent", "received"):
            self.bytes.labels(direction)
        self.merge_seconds = Histogram("driftline_sync_merge_seconds", "Time to merge a round and adopt it.",
                                       buckets=_MERGE_BUCKETS, registry=registry)
        self.staleness = Gauge("driftline_sync_last_adopted_timestamp_seconds",
                               "When this member last adopted a merged round (unix time).", registry=registry)
        self.refused = Counter("driftline_sync_refused_records", "Sync records refused, by reason (format, "
                               "model_kind; ensemble: unsigned, signature).", ["reason"], registry=registry)
        for reason in ("format", "model_kind", "unsigned", "signature"):
            self.refused.labels(reason)
        self.diverged = Counter("driftline_sync_diverged_rounds", "Rounds whose merged digest published by their "
                                "closer differs from the one this member computed.", registry=registry)
        self.group_adaptations = Counter("driftline_sync_group_adaptations", "Rounds that carried a member's "
                                         "drift adaptation: the group took the adapted model.", registry=registry)
        self.epsilon = Gauge("driftline_sync_privacy_epsilon", "sync.privacy: the privacy budget this member has "
                             "spent (epsilon at sync.privacy.delta, Opacus's RDP accountant over its updates sent).",
                             registry=registry)
        self.update_norm = Histogram("driftline_sync_update_norm", "sync.privacy: the L2 norm of this member's "
                                     "update before clipping (how often sync.privacy.clip bites).",
                                     buckets=_NORM_BUCKETS, registry=registry)
        self.unsynced_lost = Counter("driftline_sync_unsynced_labels_dropped", "Labeled events learned here that "
                                     "a restart could not tell were merged: dropped, not counted twice.",
                                     registry=registry)
