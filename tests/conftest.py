"""Shared fixtures: a real Apache Kafka broker for the whole session (or DRIFTLINE_KAFKA_BOOTSTRAP)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Under pytest-xdist each worker is one of several processes sharing the cores: one math thread each. torch and
# OpenMP otherwise start a thread per core in every worker, and they fight (measured, 2 cores: unit + contract with
# -n 2 took 279 s at the default threads, 116 s at one, 185 s serially). Set before anything imports torch; the
# service processes the integration tests start inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

from driftline.stream.broker import LocalKafkaBroker, bootstrap_from_env

# a policy registered by the tests only (one class, one registry line): settings and the contract suite see it
from tests.contract import toy_policy  # noqa: F401


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[LocalKafkaBroker | None]:
    """The local broker this session started, or None when an external cluster is configured."""
    if bootstrap_from_env():
        yield None
        return
    broker = LocalKafkaBroker(num_partitions=1)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalKafkaBroker | None) -> str:
    external = bootstrap_from_env()
    if external:
        return external
    assert kafka_broker is not None
    return kafka_broker.bootstrap_servers


BACKENDS = ("confluent", "kafka-python")


@pytest.fixture(params=BACKENDS)
def kafka_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test once per Kafka client library: every `Settings` the test builds, and every service process
    it starts (they inherit the environment), uses that backend."""
    backend: str = request.param
    monkeypatch.setenv("DRIFTLINE_KAFKA__CLIENT", backend)
    return backend


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """Unique topic/group names per test, so tests never see each other's records."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:40]
    return f"t-{name}-{uuid.uuid4().hex[:8]}"
