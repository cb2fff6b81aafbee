"""Throwaway certificate authorities and certificates for a local TLS broker (tests, demos).

Everything is made with the ``openssl`` command line into a directory: a CA, a server certificate for
127.0.0.1/localhost signed by it (unencrypted PKCS#8 key + chain, the PEM keystore Kafka reads), a client
certificate for mutual TLS with a passphrase-protected key, and a second, unrelated CA ("rogue") whose
certificate a client can be pointed at to see an untrusted-certificate failure. Never for production.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from driftline.errors import BrokerError


@dataclass(frozen=True)
class Pki:
    """Paths of the generated material (all PEM)."""

    directory: Path
    ca_cert: Path
    server_keystore: Path  # server key (PKCS#8, unencrypted) followed by its certificate and the CA's
    client_cert: Path
    client_key: Path  # encrypted with `client_key_password`
    client_key_password: str
    rogue_ca_cert: Path  # a CA that signed nothing the broker presents
    other_host_keystore: Path  # key + certificate signed by the CA for another host name (elsewhere.invalid)


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed: {proc.stderr.strip()[-2000:]}")


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key.name, "-out", cert.name, "-days", "2", "-subj", f"/CN=driftline test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)
    return key, cert


def _leaf(d: Path, name: str, ca: tuple[Path, Path], ext: str, *, passphrase: str | None = None) -> tuple[Path, Path]:
    key, csr, cert, extfile = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem", d / f"{name}.ext"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", key.name, cwd=d)
    _openssl("req", "-new", "-key", key.name, "-out", csr.name, "-subj", f"/CN={name}", cwd=d)
    extfile.write_text(ext)
    _openssl("x509", "-req", "-in", csr.name, "-CA", ca[1].name, "-CAkey", ca[0].name, "-CAcreateserial",
             "-out", cert.name, "-days", "2", "-extfile", extfile.name, cwd=d)
    if passphrase is not None:
        enc = d / f"{name}.enc.key"
        _openssl("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", key.name, "-out", enc.name,
                 "-passout", f"pass:{passphrase}", cwd=d)
        key.unlink()
        enc.rename(key)
    return key, cert


def make_pki(directory: Path) -> Pki:
    """Generate the material into ``directory`` (created); needs ``openssl`` on PATH."""
    if shutil.which("openssl") is None:
        raise BrokerError("openssl is not on PATH; it is needed to generate test certificates")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca = _ca(d, "ca")
    rogue = _ca(d, "rogue-ca")
    server_key, server_cert = _leaf(
        d, "broker", ca,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n")
    keystore = d / "broker-keystore.pem"
    keystore.write_text(server_key.read_text() + server_cert.read_text() + ca[1].read_text())
    other_key, other_cert = _leaf(d, "elsewhere", ca, "subjectAltName=DNS:elsewhere.invalid\n")
    other = d / "elsewhere-keystore.pem"
    other.write_text(other_key.read_text() + other_cert.read_text())
    password = secrets.token_urlsafe(12)
    client_key, client_cert = _leaf(
        d, "driftline-client", ca, "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n",
        passphrase=password)
    for p in d.iterdir():
        p.chmod(0o600)
    return Pki(directory=d, ca_cert=ca[1], server_keystore=keystore, client_cert=client_cert,
               client_key=client_key, client_key_password=password, rogue_ca_cert=rogue[1],
               other_host_keystore=other)
