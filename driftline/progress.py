"""The terminal progress bar of the long-running commands (produce, pretrain, replay)."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int | None, *, desc: str, unit: str, show: bool | None) -> Any:
    """A tqdm bar on stderr; ``show`` None: only when stderr is a terminal. A hidden bar's calls are no-ops."""
    from tqdm import tqdm

    enabled = sys.stderr.isatty() if show is None else show
    return tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, disable=not enabled)
