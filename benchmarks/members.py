"""Service processes for the benchmarks: `driftline run --config` as a child process, its probes and metrics."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from driftline.stream.broker import free_port
from driftline.testing import scrape


class Member:
    """One `driftline run` process on ``cfg`` (its metrics port chosen here); ``started`` -> serving is its
    start time."""

    def __init__(self, cfg: dict[str, Any], workdir: Path, name: str) -> None:
        self.port = free_port()
        path = workdir / f"{name}-{uuid.uuid4().hex[:4]}.yaml"
        path.write_text(yaml.safe_dump({**cfg, "metrics": {**cfg.get("metrics", {}), "port": self.port}}))
        self.log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "driftline.cli", "run", "--config", str(path)],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def serving(self) -> bool:
        """Ready (/readyz: running with partitions); RuntimeError if the process exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"a member exited with {self.proc.returncode}; see {self.log.name}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status == 200
        except OSError:
            return False

    def wait_serving(self, timeout: float = 180.0) -> float:
        """Seconds from spawn until serving."""
        deadline = time.monotonic() + timeout
        while not self.serving():
            if time.monotonic() > deadline:
                raise TimeoutError(f"member not serving after {timeout:.0f}s; see {self.log.name}")
            time.sleep(0.05)
        return time.monotonic() - self.started

    def metrics(self) -> dict[str, float]:
        return scrape(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(60)
        self.log.close()
