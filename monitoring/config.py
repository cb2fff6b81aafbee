"""Settings of the metrics and health endpoints: address, windows, HTTPS and authentication."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator

from driftline.config_base import Frozen, one_of


class HttpTlsSettings(Frozen):
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
        one_of("metrics.tls", self.key_password, self.key_password_file, "key_password", required=False)
        return self


class HttpAuthSettings(Frozen):
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
            one_of("metrics.auth", self.password, self.password_file, "password", required=True)
        elif self.kind == "bearer":
            one_of("metrics.auth", self.token, self.token_file, "token", required=True)
        if self.kind != "basic" and (self.password is not None or self.password_file is not None):
            raise ValueError(f"metrics.auth.password is for kind basic (kind is {self.kind})")
        if self.kind != "bearer" and (self.token is not None or self.token_file is not None):
            raise ValueError(f"metrics.auth.token is for kind bearer (kind is {self.kind})")
        return self


class MetricsSettings(Frozen):
    # Loopback by default: nothing outside the machine can read the metrics. In a container or pod set
    # 0.0.0.0 (the pod network), and consider tls + auth when the network is shared.
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)
    rolling_window: int = Field(1000, ge=10, le=1_000_000)
    lag_interval_s: float = Field(2.0, gt=0)
    tls: HttpTlsSettings = Field(default_factory=HttpTlsSettings)
    auth: HttpAuthSettings = Field(default_factory=HttpAuthSettings)


