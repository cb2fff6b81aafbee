"""Exceptions shared across driftline's subpackages."""

from __future__ import annotations


class DriftlineError(Exception):
    """Base class of driftline's own errors."""


class ConfigError(DriftlineError):
    """The configuration is invalid; the message names the setting and what was wrong."""


class BrokerError(DriftlineError):
    """The local Kafka broker could not be fetched, formatted or started."""


class PublishError(DriftlineError):
    """Outputs (predictions, dead letters) could not be delivered to Kafka.

    Offsets of the batch are not committed, so the batch is consumed again after a restart.
    """

    retriable = True


class KafkaSecurityError(DriftlineError):
    """A broker refused this client's TLS or SASL (untrusted certificate, rejected client certificate, wrong
    credentials). Retrying cannot help, so the service stops; the message names the setting to check."""

    retriable = False
