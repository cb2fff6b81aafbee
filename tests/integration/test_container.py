"""The container image, built and run for real (podman; a Debian base made with debootstrap, no registry): the
River-only image serves a real broker, reports healthy and ready, publishes predictions, runs as its non-root
user on a read-only root filesystem, and drains on SIGTERM with exit 0.

In CI (CI=true) this test fails, never skips, when podman cannot be set up; elsewhere it skips without podman.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.stream.sources import from_generator
from tests.helpers import free_port, produce_events, read_topic, wait_for

# one worker builds every image (make test runs pytest-xdist with --dist loadgroup): podman builds of the same base
# image at once would wait on each other's storage locks
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("podman")]

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf")}
IMAGE = "localhost/driftline:river-test"


def _podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and out.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {out.returncode}:\n{out.stdout[-2000:]}\n"
                             f"{out.stderr[-4000:]}")
    return out


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if not os.environ.get("CI") and shutil.which("podman") is None:
        pytest.skip("podman is not installed (CI installs it: scripts/container-base.sh)")
    base = subprocess.run(["bash", str(ROOT / "scripts" / "container-base.sh")], capture_output=True, text=True,
                          timeout=900, env=ENV)
    assert base.returncode == 0, base.stderr[-4000:]
    t0 = time.monotonic()
    # the host's CAs and pip's certificate setting go into the build (a TLS-intercepting proxy's CA among them)
    bundle = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    certs = ["-v", f"{bundle}:/host-ca.crt:ro", "--build-arg", "PIP_CERT=/host-ca.crt"] if Path(bundle).is_file() \
        else []
    _podman("build", "--network", "host", *certs, "--build-arg", f"BASE={base.stdout.strip().splitlines()[-1]}",
            "--build-arg", "EXTRAS=", "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", IMAGE, str(ROOT),
            timeout=1200)
    print(f"image built in {time.monotonic() - t0:.0f}s")
    yield IMAGE


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return int(r.status)
    except OSError:
        return 0


def test_the_image_serves_as_non_root_on_a_read_only_root_and_drains_on_sigterm(
        image: str, kafka_bootstrap: str, topic_prefix: str) -> None:
    port = free_port()
    name = f"driftline-{uuid.uuid4().hex[:8]}"
    events = list(itertools.islice(from_generator("SEA", params={"variant": 0}, seed=3, id_prefix="c-"), 500))
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", events)
    # the root filesystem read-only; the checkpoints on a volume (initialised from the image: owned by its user)
    _podman("run", "-d", "--name", name, "--network", "host", "--read-only", "-v", f"{name}:/var/lib/driftline",
            "-e", f"DRIFTLINE_KAFKA__BOOTSTRAP_SERVERS={kafka_bootstrap}",
            "-e", f"DRIFTLINE_KAFKA__GROUP_ID={topic_prefix}-group",
            "-e", f"DRIFTLINE_TOPICS__INPUT={topic_prefix}-in",
            "-e", f"DRIFTLINE_TOPICS__PREDICTIONS={topic_prefix}-pred",
            "-e", f"DRIFTLINE_TOPICS__DEAD_LETTER={topic_prefix}-dlq", "-e", f"DRIFTLINE_METRICS__PORT={port}",
            "-e", "DRIFTLINE_CHECKPOINT__EVERY_SECONDS=1", image)
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, 120, "/healthz")
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz") == 200, 120, "/readyz")
        wait_for(lambda: len(read_topic(kafka_bootstrap, f"{topic_prefix}-pred", timeout=5)) >= 500, 120,
                 "500 predictions")
        preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
        assert {p["id"] for p in preds} == {e["id"] for e in events}
        assert _podman("exec", name, "id", "-u").stdout.strip() == "10001"
        denied = _podman("exec", name, "sh", "-c", "touch /opt/driftline/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        assert _podman("exec", name, "python", "-c", "import torch", check=False).returncode != 0  # River-only
        assert list(_podman("exec", name, "ls", "/var/lib/driftline/checkpoints").stdout.split())  # it saved
        _podman("stop", "--time", "60", name, timeout=120)
        state = json.loads(_podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, _podman("logs", name).stderr[-3000:]
        logs = _podman("logs", name)
        assert "Traceback" not in logs.stdout + logs.stderr
    finally:
        _podman("rm", "-f", name, check=False)
        _podman("volume", "rm", "-f", name, check=False)
