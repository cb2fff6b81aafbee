"""Exceptions shared across driftline's subpackages."""

from __future__ import annotations

from typing import ClassVar


class DriftlineError(Exception):
    """Base class of driftline's own errors. ``exit_code``: what ``driftline`` exits with (2: fix the
    configuration first, a supervisor should not restart into it; 1: a restart may succeed)."""

    exit_code: ClassVar[int] = 2


class ConfigError(DriftlineError):
    """The configuration is invalid; the message names the setting and what was wrong."""


class BrokerError(DriftlineError):
    """The local Kafka broker could not be fetched, formatted or started."""


class PublishError(DriftlineError):
    """Outputs (predictions, dead letters) could not be delivered to Kafka.

    Offsets of the batch are not committed, so the batch is consumed again after a restart.
    """

    retriable = True
    exit_code = 1


class KafkaSecurityError(DriftlineError):
    """A broker refused this client's TLS or SASL (untrusted certificate, rejected client certificate, wrong
    credentials). Retrying cannot help, so the service stops; the message names the setting to check."""

    retriable = False
