"""Tiny torch models for backbone tests (importable by class path: ``tests.tiny_models:TinyEncoder``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

AGRAWAL_NUMERIC = ["salary", "commission", "age", "hvalue", "hyears", "loan"]


class TinyEncoder(nn.Module):
    """A non-Sequential module: scale, then one linear layer with tanh."""

    def __init__(self, in_dim: int, out_dim: int = 8) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(in_dim) * 1e-4)
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(x * self.scale))


def tiny_stack(in_dim: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_dim, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 8))


class TinyStack(nn.Sequential):
    """`tiny_stack` as a class (a torch state_dict backbone whose top layers can be unfrozen)."""

    def __init__(self, in_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, 16), nn.Tanh(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 8))


def save_stack(directory: Path, in_dim: int = len(AGRAWAL_NUMERIC), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = directory / f"stack-{in_dim}.pt"
    torch.save(TinyStack(in_dim).state_dict(), path)
    return path


def save_encoder(directory: Path, in_dim: int = len(AGRAWAL_NUMERIC), out_dim: int = 8, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path = directory / f"encoder-{in_dim}-{out_dim}.pt"
    torch.save(TinyEncoder(in_dim, out_dim).state_dict(), path)
    return path


def save_script(directory: Path, in_dim: int = len(AGRAWAL_NUMERIC), seed: int = 0) -> Path:
    path = directory / f"stack-{in_dim}.ts"
    torch.jit.save(torch.jit.script(tiny_stack(in_dim, seed)), str(path))
    return path


def torch_backbone(path: Path, **extra: Any) -> dict[str, Any]:
    return {"kind": "torch", "path": str(path), "class_path": "tests.tiny_models:TinyEncoder",
            "args": {"in_dim": len(AGRAWAL_NUMERIC), "out_dim": 8}, "features": AGRAWAL_NUMERIC,
            "device": "cpu", **extra}


class BNEncoder(nn.Module):
    """Linear -> BatchNorm1d -> Tanh: a backbone with batch-norm statistics (for AdaBN)."""

    def __init__(self, in_dim: int, out_dim: int = 8) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm = nn.BatchNorm1d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.proj(x)))


def save_bn_encoder(directory: Path, in_dim: int, out_dim: int = 8, seed: int = 0,
                    fit_on: torch.Tensor | None = None) -> Path:
    """A BNEncoder whose batch-norm statistics were estimated on ``fit_on`` (the source domain)."""
    torch.manual_seed(seed)
    model = BNEncoder(in_dim, out_dim)
    if fit_on is not None:
        model.norm.momentum = None
        model.train()
        with torch.no_grad():
            model(fit_on)
        model.eval()
    path = directory / f"bn-encoder-{in_dim}-{out_dim}.pt"
    torch.save(model.state_dict(), path)
    return path


class CrashyEncoder(TinyEncoder):
    """A TinyEncoder that kills its process when an input holds 666.0: native code dying on one record (a
    segfault, an abort), which no ``except`` can catch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x == 666.0).any()):
            os._exit(70)
        return super().forward(x)
