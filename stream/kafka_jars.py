"""Apache Kafka's broker jars, fetched from Maven Central over HTTPS from a pinned list and verified.

The list (``kafka-jars-<version>.lock``, shipped with the package) names every jar the broker runs on as
``group:artifact:version sha256``; `scripts/pin_kafka_jars.py` generates it (resolving the dependency tree
with Maven once and checking each jar against the ``.sha1`` Maven Central publishes). Fetching needs no
Maven: each jar is downloaded (``DRIFTLINE_MAVEN_REPO`` overrides the repository, e.g. an internal mirror),
its SHA-256 compared with the pin, and written atomically into the cache; a mismatch is an error naming the
jar and both digests, and nothing unverified is kept.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from driftline.errors import BrokerError

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
REPO_ENV = "DRIFTLINE_MAVEN_REPO"
LOG4J_VERSION = "2.24.3"

# What the broker needs: Kafka itself, and log4j2 behind slf4j 1.x (the broker logs to a file).
POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.driftline</groupId><artifactId>kafka-broker-libs</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <!-- the broker logs through slf4j 1.x; route it to log4j2 and a file -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""


@dataclass(frozen=True)
class Jar:
    group: str
    artifact: str
    version: str
    sha256: str

    @property
    def file_name(self) -> str:
        return f"{self.artifact}-{self.version}.jar"

    def url(self, repo: str) -> str:
        return f"{repo.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.file_name}"

    def line(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version} {self.sha256}"


def lock_path(version: str) -> Path:
    return Path(__file__).with_name(f"kafka-jars-{version}.lock")


def read_lock(path: Path) -> list[Jar]:
    jars = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            coords, sha = line.split()
            group, artifact, version = coords.split(":")
        except ValueError:
            raise BrokerError(f"{path}:{n}: expected 'group:artifact:version sha256', got {raw!r}") from None
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise BrokerError(f"{path}:{n}: {sha!r} is not a SHA-256 hex digest")
        jars.append(Jar(group, artifact, version, sha))
    return jars


def download(url: str, timeout: float = 120.0) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "driftline-broker-harness"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data: bytes = resp.read()
            return data
    except OSError as exc:
        raise BrokerError(f"cannot download {url}: {exc} (set {REPO_ENV} to a Maven repository you can "
                          "reach)") from None


def fetch_pinned(jars: list[Jar], libs: Path, repo: str | None = None) -> None:
    """Download every jar of ``jars`` missing from ``libs`` and verify it against its pin."""
    repo = repo or os.environ.get(REPO_ENV) or MAVEN_CENTRAL
    libs.mkdir(parents=True, exist_ok=True)
    for jar in jars:
        target = libs / jar.file_name
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == jar.sha256:
            continue
        data = download(jar.url(repo))
        got = hashlib.sha256(data).hexdigest()
        if got != jar.sha256:
            raise BrokerError(f"{jar.url(repo)}: SHA-256 {got} does not match the pinned {jar.sha256} "
                              f"({jar.group}:{jar.artifact}:{jar.version}); nothing was kept")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(target)
