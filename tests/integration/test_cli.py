"""The CLI commands users run, against the real broker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.stream.broker import free_port
from tests.helpers import read_topic

pytestmark = [pytest.mark.integration]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_produce_generator_with_drift(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}-in"
    out = _cli("produce", "--generator", "Agrawal", "--param", "classification_function=0", "--drift-at", "150",
               "--drift-param", "classification_function=4", "--limit", "300", "--seed", "3", "--id-prefix", "a-",
               "--topic", topic, "--bootstrap-servers", kafka_bootstrap, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"produced 300 events to {topic}" in out.stderr
    recs = read_topic(kafka_bootstrap, topic)
    events = [json.loads(r.value) for r in recs]
    assert [e["id"] for e in events] == [f"a-{i}" for i in range(300)]
    assert all(r.key == e["id"].encode() for r, e in zip(recs, events, strict=True))
    assert {"salary", "age", "loan"} <= set(events[0]["features"]) and events[0]["label"] in (0, 1)


def test_produce_dataset_and_csv(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    out = _cli("produce", "--dataset", "Phishing", "--limit", "50", "--topic", f"{topic_prefix}-ph",
               "--bootstrap-servers", kafka_bootstrap, "--no-progress")
    assert out.returncode == 0, out.stderr
    assert len(read_topic(kafka_bootstrap, f"{topic_prefix}-ph")) == 50
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("id,a,label\nx,1,1\ny,2,0\n")
    out = _cli("produce", "--file", str(csv_path), "--topic", f"{topic_prefix}-csv",
               "--bootstrap-servers", kafka_bootstrap, "--no-progress")
    assert out.returncode == 0, out.stderr
    vals = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-csv")]
    assert vals == [{"id": "x", "features": {"a": 1}, "label": 1}, {"id": "y", "features": {"a": 2}, "label": 0}]


@pytest.mark.slow
def test_demo_runs_broker_stream_and_service(tmp_path: Path) -> None:
    """`driftline demo` as the README runs it: own broker, drifting stream, metrics on a port."""
    port = free_port()
    out = _cli("demo", "--duration", "20", "--rate", "400", "--drift-at", "2000", "--metrics-port", str(port),
               timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"http://127.0.0.1:{port}/metrics" in out.stdout
    m = re.search(r"demo done: (\d+) predicted, (\d+) learned, (\d+) dead-lettered; prequential accuracy "
                  r"([0-9.]+)", out.stdout)
    assert m, out.stdout + out.stderr[-3000:]
    predicted, learned, dead = (int(m.group(i)) for i in (1, 2, 3))
    assert predicted >= 2000 and learned == predicted and dead == 0
    assert float(m.group(4)) > 0.7  # HoeffdingAdaptiveTree on Agrawal: ~0.85 measured through the drift


def test_publish_rate_limit_and_progress_bar(kafka_bootstrap: str, topic_prefix: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import itertools
    import time

    from driftline.settings import KafkaSettings
    from driftline.stream.kafka.publisher import publish
    from driftline.stream.sources import from_generator

    topic = f"{topic_prefix}-rate"
    events = itertools.islice(from_generator("SEA", seed=1, id_prefix="r-"), 60)
    t0 = time.monotonic()
    sent = publish(events, topic, KafkaSettings(bootstrap_servers=kafka_bootstrap), rate=100.0, progress=True)
    elapsed = time.monotonic() - t0
    assert sent == 60
    # at 100 events/s the 60th event cannot leave before 0.59 s (a lower bound: a slow machine only adds)
    assert elapsed >= 0.59
    err = capsys.readouterr().err
    assert f"-> {topic}" in err and "60ev" in err.replace(" ", "")
    assert len(read_topic(kafka_bootstrap, topic)) == 60
