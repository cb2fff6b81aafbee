"""The documented install brings a torch build that avalanche (via torchvision) can import."""

from __future__ import annotations


def test_avalanche_imports_with_the_installed_torch() -> None:
    import avalanche
    import torch
    import torchvision
    from avalanche.training import EWC, LwF, Naive, Replay

    assert avalanche.__version__.startswith("0.6")
    assert torch.__version__ and torchvision.__version__
    assert all(callable(s) for s in (Naive, Replay, EWC, LwF))
    # runs on CPU even with the CUDA build
    assert float(torch.ones(2, device="cpu").sum()) == 2.0
