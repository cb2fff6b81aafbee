"""One context for seeded training: every global random source seeded, and restored afterwards.

Libraries draw from different global generators: torch's (dropout, `torch.randperm` in Avalanche's
samplers and buffers), CUDA's on a GPU, Python's `random` (Avalanche's A-GEM shuffles its memory with
`random.shuffle`) and numpy's legacy one. A training step that seeds only torch's is reproducible only
by accident: the others carry whatever state the process left in them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np


@contextmanager
def seeded(seed: int, device: Any = None) -> Iterator[None]:
    """Seed torch (CPU, and the CUDA ``device`` when given), Python's `random` and numpy's global
    generator with ``seed`` for the block; their previous states come back after it."""
    import torch

    cuda: list[int] = []
    if device is not None and torch.device(device).type == "cuda":
        index = torch.device(device).index
        cuda = [torch.cuda.current_device() if index is None else index]
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)  # also seeds every CUDA device
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
