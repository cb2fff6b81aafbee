"""The local broker harness: it really serves Kafka, restarts with its data, and never outlives us."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

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
