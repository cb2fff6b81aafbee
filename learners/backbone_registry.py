"""The backbone kinds a config may name (``model.backbone.kind``), and loading the one it names.

``identity`` is no backbone (River heads read the features as they are; vector heads get the named
features as a tensor); ``sentence-transformers`` is imported only when asked for (it is heavy).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from driftline.learners.backbones import (
    Backbone,
    IdentityVectorBackbone,
    PixelsBackbone,
    TorchModuleBackbone,
    TorchScriptBackbone,
    TorchvisionBackbone,
)
from driftline.learners.config import BackboneSettings

log = logging.getLogger(__name__)


def _sentence_transformer(cfg: BackboneSettings) -> Backbone:
    from driftline.learners.text_backbone import SentenceTransformerBackbone

    return SentenceTransformerBackbone(cfg)


BACKBONES: dict[str, Callable[[BackboneSettings], Backbone]] = {
    "sentence-transformers": _sentence_transformer,
    "torch": TorchModuleBackbone,
    "torchscript": TorchScriptBackbone,
    "torchvision": TorchvisionBackbone,
    "pixels": PixelsBackbone,
}


def load_backbone(cfg: BackboneSettings, *, vector: bool = False) -> Backbone | None:
    """The backbone a config asks for; raises ConfigError on any problem. ``identity`` gives None,
    or with ``vector`` (a torch head needs a tensor) the named features as a vector."""
    if cfg.kind == "identity":
        return IdentityVectorBackbone(cfg) if vector else None
    backbone = BACKBONES[cfg.kind](cfg)
    log.info("backbone %s loaded on %s: %d-dim embeddings", cfg.kind, backbone.device, backbone.dim)
    return backbone
