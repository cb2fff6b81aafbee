"""Validated, frozen configuration: YAML file + environment overrides (pydantic-settings).

The sections of the model, the drift detection and the metrics endpoints are defined by the packages
that use them (`learners.config`, `adapters.config`, `monitoring.config`), so those packages need not
import this module; the Kafka, topic, label-join and checkpoint sections and the whole `Settings` are
here.

Precedence (highest first): explicit keyword arguments, environment variables
(``DRIFTLINE_`` prefix, ``__`` between nested names, e.g. ``DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS``),
the YAML file, then the defaults below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from driftline.adapters.config import (
    DetectorSettings,
    DriftSettings,
    GuardSettings,
    InputDriftSettings,
    PolicySettings,
)
from driftline.adapters.promotion import PromotionSettings
from driftline.config_base import Frozen, one_of
from driftline.errors import ConfigError
from driftline.learners.config import DEFAULT_TEXT_MODEL, BackboneSettings, ModelSettings
from driftline.media import DTYPES, DType, MediaLimits
from driftline.monitoring.config import HttpAuthSettings, HttpTlsSettings, MetricsSettings

__all__ = [
    "DEFAULT_TEXT_MODEL", "BackboneSettings", "CheckpointSettings", "DetectorSettings", "DriftSettings",
    "GuardSettings", "HttpAuthSettings", "HttpTlsSettings", "InputDriftSettings", "InputLimits", "KafkaSaslSettings",
    "KafkaSettings", "KafkaTlsSettings", "LabelSettings", "MetricsSettings", "ModelEntry", "ModelSettings",
    "PolicySettings", "PromotionSettings",
    "Settings", "TopicSettings", "format_validation_error", "load_settings",
]


# names of client properties whose values are secret (passwords, keys, tokens, JAAS lines)
SECRET_PROPERTY = re.compile(r"password|secret|token|jaas|credential|(^|[._])key([._]|$)|pem", re.IGNORECASE)


class KafkaTlsSettings(Frozen):
    """TLS to the brokers (security_protocol SSL or SASL_SSL). Files are PEM."""

    cafile: str | None = None  # CA bundle the brokers' certificates must chain to (None: the system's CAs)
    certfile: str | None = None  # client certificate (mutual TLS), with keyfile
    keyfile: str | None = None
    key_password: SecretStr | None = None  # passphrase of an encrypted keyfile ...
    key_password_file: str | None = None  # ... or a file holding it (e.g. a mounted Kubernetes secret)
    check_hostname: bool = True  # the broker's certificate must name the host connected to
    crlfile: str | None = None  # certificate revocation list checked for the broker's certificate

    @model_validator(mode="after")
    def _pairs(self) -> KafkaTlsSettings:
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("certfile and keyfile go together (a client certificate and its key)")
        one_of("kafka.ssl", self.key_password, self.key_password_file, "key_password", required=False)
        if self.keyfile is None and (self.key_password is not None or self.key_password_file is not None):
            raise ValueError("key_password is for an encrypted keyfile, and no keyfile is set")
        return self

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.cafile, self.certfile, self.crlfile)) or not self.check_hostname


class KafkaSaslSettings(Frozen):
    """SASL authentication (security_protocol SASL_SSL or SASL_PLAINTEXT)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = "SCRAM-SHA-512"
    username: str | None = None  # PLAIN / SCRAM
    password: SecretStr | None = None  # PLAIN / SCRAM: the password (env DRIFTLINE_KAFKA__SASL__PASSWORD) ...
    password_file: str | None = None  # ... or a file holding it
    # OAUTHBEARER: a bearer token, or a file holding one that is read again at every (re)authentication
    # (kafka-python) or whenever the client's token nears its expiry (librdkafka), so a token refreshed by a
    # sidecar is picked up.
    oauth_token: SecretStr | None = None
    oauth_token_file: str | None = None
    # How long a token is good for when it does not say so itself (a JWT's "exp" claim wins); librdkafka asks
    # for a new one at 80% of it.
    oauth_token_lifetime_seconds: float = Field(300.0, gt=0)

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.username, self.password, self.password_file, self.oauth_token,
                                           self.oauth_token_file))


class KafkaSettings(Frozen):
    """Connection and client tuning shared by the consumer and the producers."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # The client library: confluent (librdkafka, the fast one) or kafka-python (pure Python). auto: confluent.
    client: Literal["auto", "confluent", "kafka-python"] = "auto"
    # Raw properties of the chosen client (librdkafka's dotted names, or kafka-python's keyword names), for what
    # the settings here do not cover, e.g. {"socket.keepalive.enable": true}. Unknown names are refused when the
    # service starts; names the service owns (offset commits, assignment, security, ...) are refused with the
    # setting to use instead; values of names that look secret are masked like every secret.
    client_properties: dict[str, SecretStr | bool | int | float | str] = Field(default_factory=dict)
    # Applies to every client the service creates (consumer, producers, admin).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl: KafkaTlsSettings = Field(default_factory=KafkaTlsSettings)
    sasl: KafkaSaslSettings = Field(default_factory=KafkaSaslSettings)
    client_id: str = "driftline"
    group_id: str = "driftline"
    # Static group membership (KIP-345): an id unique per process and stable across its restarts, e.g. a
    # StatefulSet pod's name (DRIFTLINE_KAFKA__INSTANCE_ID). A restarted member reclaims its partitions without a
    # rebalance if it is back within session_timeout_ms (a crash). Two processes with one id fence each other: the
    # older one stops (exit 2).
    instance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,249}$")
    # A static member stopped gracefully (SIGTERM: a rolling deploy, scale in) leaves the group after its last save
    # point, so its partitions move to the others at once; false: they wait for its return, up to
    # session_timeout_ms (no rebalance if it comes back in time, but nothing of its partitions is served meanwhile).
    leave_group_on_stop: bool = True
    # The consumer group protocol. consumer (KIP-848, Kafka >= 4.0, librdkafka only): the broker assigns with its
    # range assignor (sticky; an event's partition and its label's stay on one member) and a rebalance stops only
    # the partitions that move. classic: the eager range protocol, every partition of every member stops in a
    # rebalance (the only one kafka-python speaks). auto: consumer on librdkafka when the broker offers it
    # (ConsumerGroupHeartbeat in its API versions) for dynamic members without exactly_once, else classic (see
    # the README's Deploy section for what the consumer protocol does to static members and transactions).
    group_protocol: Literal["auto", "classic", "consumer"] = "auto"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # consumer
    max_poll_records: int = Field(1000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(200, ge=1, le=60_000)
    fetch_min_bytes: int = Field(1, ge=1)
    fetch_max_wait_ms: int = Field(100, ge=0)
    max_partition_fetch_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # How long the group waits for a member that stopped heartbeating, and how often members heartbeat. On the
    # consumer protocol both are the group's, kept by the broker (group.consumer.session.timeout.ms and
    # heartbeat.interval.ms, 45 s and 5 s by default): a value set here is written to the group's config when the
    # service starts (ALTER_CONFIGS on the group; within the broker's group.consumer.min/max.* bounds), one left
    # unset leaves the group's as it is. A partition moves in about two heartbeats on that protocol.
    # The shipped example lists session_timeout_ms: 45000, which is the broker's default.
    session_timeout_ms: int = Field(45_000, ge=1000)
    heartbeat_interval_ms: int | None = Field(None, ge=100)  # None: the client's (3 s) or the group's
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    # producer
    acks: Literal["all", "1", "0"] = "all"
    linger_ms: int = Field(5, ge=0)
    batch_size: int = Field(256 * 1024, ge=1024)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    request_timeout_ms: int = Field(30_000, ge=1000)
    # kafka-python only: where the service's producer runs: "process" (a child process, so publishing uses
    # another core), "thread" (in the service's process), or "auto" (process when there are 2+ CPUs).
    # librdkafka's producer queues in C and sends from its own threads.
    publisher: Literal["auto", "process", "thread"] = "auto"
    # Exactly-once outputs (librdkafka only): each batch's predictions, dead letters, audit and expired records,
    # partition snapshots and consumed offsets are written in one Kafka transaction; consumers of the outputs
    # that read with isolation.level=read_committed see each prediction once. Requires acks: all.
    exactly_once: bool = False
    # How long the broker waits for a transaction of a process that died before aborting it (read_committed
    # readers of its partitions, and the partitions' next owner, wait that long after a crash).
    transaction_timeout_ms: int = Field(10_000, ge=1000, le=900_000)

    @field_validator("client_properties")
    @classmethod
    def _mask_secret_properties(
            cls, v: dict[str, SecretStr | bool | int | float | str]) -> dict[str, SecretStr | bool | int | float | str]:
        return {k: SecretStr(str(x)) if SECRET_PROPERTY.search(k) and not isinstance(x, SecretStr) else x
                for k, x in v.items()}

    @property
    def backend(self) -> Literal["confluent", "kafka-python"]:
        """The client library ``client`` selects (auto: confluent)."""
        return "kafka-python" if self.client == "kafka-python" else "confluent"

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, v: str | None) -> str | None:
        if v in (".", ".."):
            raise ValueError(f"instance_id {v!r} is not a valid group.instance.id")
        return v

    @model_validator(mode="after")
    def _exactly_once(self) -> KafkaSettings:
        if self.exactly_once and self.backend != "confluent":
            raise ValueError("exactly_once needs kafka.client confluent (librdkafka): kafka-python's producer runs in "
                             "a child process and cannot join the consumer's offsets to its transactions")
        if self.exactly_once and self.acks != "all":
            raise ValueError(f"exactly_once needs acks: all (idempotent, transactional producer), not {self.acks!r}")
        return self

    @model_validator(mode="after")
    def _timeouts(self) -> KafkaSettings:
        if self.max_poll_interval_ms < self.session_timeout_ms:
            raise ValueError(f"max_poll_interval_ms ({self.max_poll_interval_ms}) must be at least session_timeout_ms "
                             f"({self.session_timeout_ms})")
        if self.heartbeat_interval_ms is not None and self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError(f"heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below session_timeout_ms "
                             f"({self.session_timeout_ms})")
        return self

    @model_validator(mode="after")
    def _group_protocol(self) -> KafkaSettings:
        if self.group_protocol == "consumer" and self.backend != "confluent":
            raise ValueError("group_protocol consumer (KIP-848) needs kafka.client confluent: kafka-python speaks only "
                             "the classic protocol")
        if self.group_protocol == "consumer" and self.exactly_once:
            raise ValueError("group_protocol consumer with exactly_once: a transaction's offsets are refused "
                             "(ILLEGAL_GENERATION) whenever a rebalance moves the member's epoch, even for partitions "
                             "it keeps, and a failed transaction stops the service (measured on Kafka 4.2 with "
                             "librdkafka 2.16); use group_protocol classic (auto does)")
        return self

    @property
    def group_timeouts(self) -> dict[str, int]:
        """The group timeouts this configuration sets itself (the consumer protocol's group configs), by the
        group config's name; those left unset are the broker's."""
        chosen = self.model_fields_set
        return {**({"consumer.session.timeout.ms": self.session_timeout_ms} if "session_timeout_ms" in chosen else {}),
                **({"consumer.heartbeat.interval.ms": self.heartbeat_interval_ms}
                   if self.heartbeat_interval_ms is not None else {})}

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        proto, sasl = self.security_protocol, self.sasl
        if "SSL" not in proto and self.ssl.configured:
            raise ValueError(f"ssl settings are set but security_protocol is {proto}: TLS would not be used "
                             "(use SSL or SASL_SSL)")
        if not proto.startswith("SASL"):
            if sasl.configured:
                raise ValueError(f"sasl settings are set but security_protocol is {proto}: they would not be used "
                                 "(use SASL_SSL or SASL_PLAINTEXT)")
            return self
        if sasl.mechanism == "OAUTHBEARER":
            one_of("kafka.sasl", sasl.oauth_token, sasl.oauth_token_file, "oauth_token", required=True)
            if sasl.password is not None or sasl.password_file is not None:
                raise ValueError("kafka.sasl: OAUTHBEARER authenticates with oauth_token, not password")
        else:
            if not sasl.username:
                raise ValueError(f"kafka.sasl.username is required for {sasl.mechanism}")
            one_of("kafka.sasl", sasl.password, sasl.password_file, "password", required=True)
            if sasl.oauth_token is not None or sasl.oauth_token_file is not None:
                raise ValueError(f"kafka.sasl: oauth_token is for OAUTHBEARER, not {sasl.mechanism}")
        return self


class TopicSettings(Frozen):
    input: str = "driftline.events"
    predictions: str = "driftline.predictions"
    dead_letter: str = "driftline.dead-letter"
    # Labels that arrive after their event ({"id", "label", "timestamp"}, keyed by event id, same
    # partition count as the input); None: labels come only on the events themselves.
    labels: str | None = None
    # Where predictions that expired unlabeled are written (None: only counted).
    expired: str | None = None
    # Audit records of drift detections, adaptation actions and promotions; None: only logged and counted.
    audit: str | None = None
    # With challengers (models: ...): every challenger's prediction, in the predictions topic's format with the
    # challenger's name in `model`; None: challengers' predictions are only scored.
    shadow: str | None = None
    # The largest record the dead-letter topic takes (its max.message.bytes, and the producer's limit); a dead
    # letter above it, with its headers, is cut to fit and says so (driftline.truncated, original_bytes).
    dead_letter_max_bytes: int = Field(1_000_000, ge=4096)
    # The compacted topic that carries each input partition's state (pending label joins, dedup ids) to the
    # member of the group that takes the partition over; None: "driftline.<group id>.partition-state".
    # Used only when there is such state (topics.labels or dedup_window set).
    partition_state: str | None = None

    @field_validator("input", "predictions", "dead_letter", "labels", "expired", "audit", "partition_state", "shadow")
    @classmethod
    def _valid_topic(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ValueError(f"invalid Kafka topic name {v!r} (letters, digits, '.', '_', '-'; 1-249 chars)")
        return v


class LabelSettings(Frozen):
    """Bounds of the delayed-label join (used when ``topics.labels`` is set)."""

    # How long (in event time: Kafka record timestamps) a prediction waits for its label, and a label
    # for its event.
    ttl_seconds: float = Field(3600.0, gt=0)
    max_pending: int = Field(100_000, ge=1, le=50_000_000)  # each side; the oldest expires beyond it


class InputLimits(Frozen):
    """What decoding an event accepts at most (each bound hit is a dead letter naming it)."""

    max_depth: int = Field(16, ge=2, le=1000)  # JSON nesting (an event needs 2: the object and its features)
    max_number_chars: int = Field(40, ge=1, le=4000)  # digits of an integer (Python refuses 4,300)
    max_features: int = Field(10_000, ge=1, le=10_000_000)  # feature names in one event
    max_string_chars: int = Field(10_000, ge=1)  # a feature value, key or label string
    max_text_chars: int = Field(1_000_000, ge=1)  # the `text` field
    # `image` events: the encoded file (after base64), the pixels it declares (more: a decompression bomb),
    # its longest side, the formats accepted
    max_image_bytes: int = Field(4_000_000, ge=64)
    max_image_pixels: int = Field(4_000_000, ge=1)
    max_image_side: int = Field(8192, ge=1)
    image_formats: tuple[Literal["PNG", "JPEG", "WEBP"], ...] = ("PNG", "JPEG", "WEBP")
    # `tensor` events: elements, dimensions, the dtypes accepted
    max_tensor_elements: int = Field(4_000_000, ge=1)
    max_tensor_dims: int = Field(8, ge=1, le=64)
    tensor_dtypes: tuple[DType, ...] = DTYPES

    def media(self) -> MediaLimits:
        """The bounds `driftline.media` decodes images and tensors within."""
        return MediaLimits(max_image_bytes=self.max_image_bytes, max_image_pixels=self.max_image_pixels,
                           max_image_side=self.max_image_side, image_formats=tuple(self.image_formats),
                           max_tensor_elements=self.max_tensor_elements, max_tensor_dims=self.max_tensor_dims,
                           tensor_dtypes=tuple(self.tensor_dtypes))


class CheckpointSettings(Frozen):
    """Where and how often the learning state is saved together with the offsets it reflects. Offsets are
    committed at these save points only (with or without a directory), right after the state they reflect."""

    directory: str | None = None  # None: no checkpoints (a restart starts from the initial model)
    every_events: int = Field(10_000, ge=1)
    every_seconds: float = Field(30.0, gt=0)
    keep: int = Field(3, ge=1, le=1000)


class PrivacySettings(Frozen):
    """Differential privacy for what a member sends (``sync.mode average``; `learners.privacy`): each round's
    update clipped to L2 norm ``clip``, plus Gaussian noise of std ``noise_multiplier * clip``; the budget
    (epsilon at ``delta``) from Opacus's RDP accountant. Off while ``clip`` is None."""

    clip: float | None = Field(None, gt=0)
    noise_multiplier: float = Field(1.0, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    seed: int | None = None  # the noise's seed (tests); None: the operating system's entropy


class SyncSettings(Frozen):
    """One model for the consumer group: members share what they learned over a Kafka topic (`stream.sync`).
    ``average``: federated averaging of the model's parameters, weighted by labeled events (River's linear
    models: LogisticRegression, Perceptron, LinearRegression, SoftmaxRegression, with their scaler; naive Bayes's
    counts added exactly; the torch heads and the Continual learner's network).
    ``ensemble``: every member publishes a signed snapshot of its model; each serves the vote of its own model
    and the others' latest snapshots, weighted by their recent accuracy (any model; `stream.snapshots`)."""

    mode: Literal["none", "average", "ensemble"] = "none"
    # The sync topic (one partition: its order is the order every member merges in; compacted); None:
    # "driftline.<group id>.sync". Sites (members in other consumer groups, each with its own input) share
    # one model by naming the same topic.
    topic: str | None = None
    # The cluster of the sync topic when it is not the service's own (sites that share only parameters: their
    # events never leave their cluster); the same connection settings as `kafka` (TLS, SASL, secrets).
    kafka: KafkaSettings | None = None
    # A member sends its update (ensemble: its snapshot) at the first save point after this many labeled
    # events or seconds (a save point first: what it sends reflects only learning whose offsets are committed).
    every_events: int = Field(5_000, ge=1)
    every_seconds: float = Field(5.0, gt=0)
    # A round closes when every member that takes part has sent its update, or this long after this member
    # sent its own (members that have not sent theirs by then are left out of the round and count as gone).
    round_timeout_seconds: float = Field(5.0, gt=0)
    # ensemble: the HMAC-SHA256 key that signs snapshots (a snapshot is a whole pickled model: it is loaded only
    # once its signature is verified); every member of the topic needs the same key, at least 16 characters.
    key: SecretStr | None = None
    key_file: str | None = None  # ... or a file holding it (e.g. a mounted Kubernetes secret)
    # ensemble: the largest snapshot sent (compressed; a larger one is not sent, counted and logged), and how old
    # another member's snapshot may get before it leaves the vote (a member that stopped without saying so).
    max_snapshot_bytes: int = Field(8_000_000, ge=10_000, le=100_000_000)
    max_snapshot_age_seconds: float = Field(600.0, gt=0)
    # average: differential privacy for the updates a member sends (off by default)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)

    @model_validator(mode="after")
    def _ensemble_key(self) -> SyncSettings:
        one_of("sync", self.key, self.key_file, "key", required=self.mode == "ensemble")
        if self.privacy.clip is not None and self.mode != "average":
            raise ValueError(f"sync.privacy is for sync.mode average (the updates a member sends); mode is {self.mode}")
        return self

    @field_validator("topic")
    @classmethod
    def _valid_topic(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ValueError(f"invalid Kafka topic name {v!r} (letters, digits, '.', '_', '-'; 1-249 chars)")
        return v


# drift policies a group in sync.mode average cannot carry: they change the backbone's state (batch-norm
# statistics, its layers), which is not among the parameters members merge
GROUP_UNSUPPORTED_POLICIES = ("adabn", "adversarial")
# models whose merged state is counts of the members' events (sync.mode average merges them exactly)
COUNTING_MODELS = ("GaussianNB", "MultinomialNB")
MAX_MODELS = 16
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ModelEntry(ModelSettings):
    """One of several models (champion and challengers): a full model config, its own drift detection and
    adaptation ladder (None: the top-level ``drift`` section), and whether it is the champion at start."""

    drift: DriftSettings | None = None
    serving: bool = False

    def model(self) -> ModelSettings:
        """The model config alone (what builds its learner)."""
        return ModelSettings.model_validate(self.model_dump(exclude={"drift", "serving"}))


class Settings(BaseSettings):
    """The whole service configuration."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLINE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        yaml_file=None,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    # Champion and challengers: several named models (instead of `model`) that all predict and learn every
    # event; the champion's predictions are served, and a challenger replaces it by `promotion`'s test. The
    # names are the `model` label of the metrics and the `model` field of predictions.
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    sync: SyncSettings = Field(default_factory=SyncSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    max_payload_bytes: int = Field(1_000_000, ge=64)
    limits: InputLimits = Field(default_factory=InputLimits)
    # Remember this many recent event ids; an id seen again within them is dead-lettered (duplicate_id).
    # 0 turns it off. The window is checkpointed, and each input partition's ids move with the partition.
    dedup_window: int = Field(0, ge=0, le=10_000_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # the Kafka client's own loggers, librdkafka and kafka (DEBUG: connections, security, the group; redacted)
    kafka_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"
    # Python's garbage collector: allocations between young-generation collections (Python's default is 700,
    # which makes the collector run every ~50 events here). Before the first poll the start-up heap (the
    # model, the state restored) is frozen out of every later collection. 0: Python's defaults, nothing frozen.
    gc_threshold: int = Field(10_000, ge=0, le=1_000_000)

    def _group_topic(self, configured: str | None, suffix: str) -> str:
        """``configured``, or the group's own topic ``driftline.<group id>.<suffix>`` (a valid topic name)."""
        if configured is not None:
            return configured
        group = re.sub(r"[^A-Za-z0-9._-]", "_", self.kafka.group_id)[:200]
        return f"driftline.{group}.{suffix}"

    @property
    def partition_state_topic(self) -> str:
        """``topics.partition_state``, or the group's own default name."""
        return self._group_topic(self.topics.partition_state, "partition-state")

    @model_validator(mode="after")
    def _sync_decisions(self) -> Settings:
        if self.sync.mode == "ensemble" and self.drift.policies:
            raise ValueError(
                "sync.mode ensemble with drift.policies: not built yet (each member would adapt its own model "
                "alone); keep the detectors (they only report) and remove drift.policies, or use sync.mode average")
        on_backbone = [p.name for p in self.drift.policies if p.name in GROUP_UNSUPPORTED_POLICIES]
        if self.sync.mode == "average" and on_backbone:
            raise ValueError(
                f"sync.mode average with drift.policies {on_backbone}: they adapt the backbone's own state, which "
                "the group does not merge; the group carries reset, background and replay_burst (a member's "
                "adapted model becomes the group's at its next round)")
        if self.sync.privacy.clip is not None and self.model.scale:
            raise ValueError("sync.privacy with model.scale: the scaler's running means and variances are statistics "
                             "of each member's data and would be sent exactly (privacy covers the averaged weights); "
                             "set model.scale false (and send features on a common scale)")
        if self.sync.privacy.clip is not None and self.model.name.rsplit(".", 1)[-1] in COUNTING_MODELS:
            raise ValueError(f"sync.privacy with model {self.model.name}: its counts are statistics of each member's "
                             "data and would be sent exactly (privacy covers averaged weights); use a linear model")
        text = self.model.text_features
        if self.sync.mode == "average" and text is not None and text.kind == "TFIDF":
            raise ValueError("sync.mode average with model.text_features TFIDF: each member's document frequencies "
                             "would weigh the same terms differently, and they are not merged; use BagOfWords")
        return self

    @model_validator(mode="after")
    def _models(self) -> Settings:
        models = self.models
        if not models:
            return self
        if "model" in self.model_fields_set:
            raise ValueError("set model (one model) or models (champion and challengers), not both")
        if len(models) < 2 or len(models) > MAX_MODELS:
            raise ValueError(f"models: {len(models)} given; champion and challengers are 2 to {MAX_MODELS} models "
                             "(one model: use model)")
        if bad := [n for n in models if not MODEL_NAME.fullmatch(n) or n == "served"]:
            raise ValueError(f"models: invalid name(s) {bad} (letters, digits, '.', '_', '-'; at most 64; they "
                             "are metric labels, and 'served' labels what was served)")
        tasks = {e.task for e in models.values()}
        if len(tasks) > 1:
            raise ValueError(f"models: all models must have one task, got {sorted(tasks)}")
        serving = [n for n, e in models.items() if e.serving]
        if len(serving) > 1:
            raise ValueError(f"models: one model serves at start, got serving: true on {serving}")
        if self.sync.mode != "none":
            raise ValueError(f"sync.mode {self.sync.mode} with models: the group does not yet decide promotions "
                             "together (each member would pick its own champion); use one model with sync, or "
                             "sync.mode none")
        if self.promotion.schedule == "sequential" and tasks != {"classification"}:
            raise ValueError("promotion.schedule sequential is for classification (regression: window, a paired "
                             "t-test on the absolute errors)")
        # `model` is the serving model's config: what reads one model config (pretrain, the demo) reads it
        object.__setattr__(self, "model", models[self.serving_model].model())
        return self

    @property
    def serving_model(self) -> str:
        """The name of the model that serves at start (with ``models``; else the one model's name)."""
        if not self.models:
            return self.model.name
        return next((n for n, e in self.models.items() if e.serving), next(iter(self.models)))

    @property
    def sync_topic(self) -> str:
        """``sync.topic``, or the group's own default name."""
        return self._group_topic(self.sync.topic, "sync")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))


SECRET_FIELDS = frozenset({"password", "key_password", "token", "oauth_token"})


def _masked(value: Any, key: str = "") -> Any:
    """``value`` with anything under a secret setting's name replaced (error messages echo inputs)."""
    if key in SECRET_FIELDS and value is not None:
        return "**********"
    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``dotted.path: message (got value)``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        value = _masked(err.get("input"), str(err["loc"][-1]) if err["loc"] else "")
        got = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {value!r})"
        lines.append(f"  {loc}: {msg}{got}")
    return "\n".join(lines)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional YAML file, the environment and keyword overrides.

    Raises ConfigError naming every invalid setting.
    """
    cls: type[Settings] = Settings
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist or is not a file")
        try:
            content = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from exc
        if content is not None and not isinstance(content, dict):
            raise ConfigError(f"config file {str(p)!r} must hold a mapping at the top level")
        cls = type(
            "Settings", (Settings,), {"model_config": SettingsConfigDict(**{**Settings.model_config, "yaml_file": p})}
        )
    try:
        return cls(**overrides)
    except ValidationError as exc:
        where = f" in {str(path)!r}" if path is not None else ""
        # from None: a ValidationError's own text echoes the raw inputs, secrets included
        raise ConfigError(f"invalid configuration{where}:\n{format_validation_error(exc)}") from None
