"""The network the Continual learner's strategy trains (a module-level class: strategies are pickled)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ContinualNet(nn.Module):
    """(standardise) -> the backbone's unfrozen top layers -> classifier head."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, top: nn.Module | None, dim: int, hidden: int, dropout: float, n_out: int,
                 standardize: bool) -> None:
        super().__init__()
        self.top = top
        self.head: nn.Module = (nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                              nn.Linear(hidden, n_out)) if hidden else nn.Linear(dim, n_out))
        self.standardize = standardize
        self.register_buffer("mean", torch.zeros(dim if standardize else 0))
        self.register_buffer("std", torch.ones(dim if standardize else 0))

    def forward(self, x: torch.Tensor) -> Any:
        if self.standardize:
            x = (x - self.mean) / self.std
        if self.top is not None:
            for layer in self.top:  # type: ignore[attr-defined]
                x = layer(x)
            x = x.reshape(x.shape[0], -1)
        return self.head(x)
