"""Secured listeners for the local broker: SSL (mutual TLS), SASL_SSL and SASL_PLAINTEXT.

`BrokerSecurity` adds three listeners beside the broker's PLAINTEXT one (which the harness itself and
inter-broker traffic keep using): ``SSL`` requiring a client certificate signed by the test CA,
``SASL_SSL`` and ``SASL_PLAINTEXT`` offering SCRAM-SHA-256, SCRAM-SHA-512, PLAIN and OAUTHBEARER (Kafka's
unsecured-JWT validator: tokens are not verified, test use only). SCRAM credentials are created the way
Kafka documents for KRaft: ``kafka-storage format --add-scram`` before the first start.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.pki import Pki, make_pki

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN", "OAUTHBEARER")
SECURE_LISTENERS = ("SSL", "SASL_SSL", "SASL_PLAINTEXT")

_JAAS = {
    "scram-sha-256": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    "scram-sha-512": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
    "oauthbearer": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                   'unsecuredLoginStringClaim_sub="broker";',
}


def _user() -> dict[str, str]:
    return {"driftline": secrets.token_urlsafe(18)}


@dataclass
class BrokerSecurity:
    """The secured listeners' material: a generated PKI and SASL users (name -> password)."""

    pki: Pki
    users: dict[str, str] = field(default_factory=_user)
    listeners: tuple[str, ...] = SECURE_LISTENERS

    @classmethod
    def generate(cls, directory: Path | None = None) -> BrokerSecurity:
        return cls(make_pki(Path(directory or tempfile.mkdtemp(prefix="driftline-pki-"))))

    def properties(self, ports: dict[str, int]) -> list[str]:
        """server.properties lines for the listeners in ``ports`` (protocol name -> port)."""
        lines = [
            "inter.broker.listener.name=PLAINTEXT",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.pki.server_keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.pki.ca_cert}",
            "listener.name.ssl.ssl.client.auth=required",
            f"sasl.enabled.mechanisms={','.join(MECHANISMS)}",
        ]
        plain_users = " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
        for listener in ("sasl_ssl", "sasl_plaintext"):
            if listener.upper() not in ports:
                continue
            for mech, jaas in _JAAS.items():
                lines.append(f"listener.name.{listener}.{mech}.sasl.jaas.config={jaas}")
            lines.append(f"listener.name.{listener}.plain.sasl.jaas.config="
                         f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};")
        return lines

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments creating the SCRAM credentials."""
        args: list[str] = []
        for user, password in self.users.items():
            for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                args += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        return args
