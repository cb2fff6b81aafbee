"""Build the learner a model config describes: backbone + head, optionally from a pretrained file."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set

from driftline.errors import ConfigError
from driftline.learners.backbone_registry import load_backbone
from driftline.learners.base import Learner
from driftline.learners.config import ModelSettings
from driftline.learners.registry import CONTINUAL, TORCH_HEADS, resolve

log = logging.getLogger(__name__)


DEEP_EXTRA = "pip install 'driftline[deep]'"


def missing_deep(cfg: ModelSettings) -> tuple[str, list[str]] | None:
    """(the setting that needs the deep extra, the modules of it this install lacks), or None."""
    import importlib.util

    if cfg.name in TORCH_HEADS or cfg.name in CONTINUAL:
        what = f"model.name {cfg.name}"
    elif cfg.backbone.kind != "identity":
        what = f"model.backbone.kind {cfg.backbone.kind}"
    else:
        return None
    needed = ["torch"]
    if cfg.name in CONTINUAL:
        needed += ["torchvision", "avalanche"]
    if cfg.backbone.kind == "torchvision":
        needed.append("torchvision")
    if cfg.backbone.kind == "sentence-transformers":
        needed.append("sentence_transformers")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    return (what, missing) if missing else None


def build_learner(cfg: ModelSettings) -> Learner:
    """The learner for ``cfg`` (its starting state from ``cfg.start_from`` when set).

    Raises ConfigError, naming the setting, the file and what was expected, for anything that
    would stop it from predicting: bad parameters, missing or mismatched model files, a deep model on an
    install without the deep extra.
    """
    lacking = missing_deep(cfg)
    if lacking is not None:
        raise ConfigError(f"{lacking[0]} needs {', '.join(lacking[1])}, which this install lacks: {DEEP_EXTRA}")
    learner: Learner
    if cfg.name in TORCH_HEADS or cfg.name in CONTINUAL:
        backbone = load_backbone(cfg.backbone, vector=True)
        assert backbone is not None
        learner = resolve({**TORCH_HEADS, **CONTINUAL}[cfg.name])(cfg, backbone)
    else:
        backbone = load_backbone(cfg.backbone)
        if backbone is None:
            from driftline.learners.river_sync import mergeable_cls

            learner = mergeable_cls(cfg.name)(cfg)
        else:
            from driftline.learners.embedding import BackboneRiverLearner

            learner = BackboneRiverLearner(cfg, backbone)
    if cfg.start_from:
        load_pretrained(learner, cfg.start_from)
    return learner


def load_pretrained(learner: Learner, path: str) -> None:
    from driftline.learners.checkpoint import CheckpointError, read_model_file

    try:
        meta, state = read_model_file(path)
    except CheckpointError as exc:
        raise ConfigError(f"model.start_from: {exc}") from None
    try:
        learner.load_state_dict(state)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"model.start_from: the pretrained model {path!r} does not fit this model config: {exc}") \
            from None
    log.info("starting from the pretrained model %s (%s, %d labels learned on %s)", path, meta.get("model"),
             learner.updates, meta.get("source"))


def build_learners(cfgs: Mapping[str, ModelSettings], *, exclusive: Set[str] = frozenset()) -> dict[str, Learner]:
    """Each model's learner, by name. River heads whose backbone configs are equal share one loaded backbone
    and its batch cache (one forward per batch for all of them), except the models in ``exclusive`` (e.g.
    whose adaptation changes their backbone in place: they load their own)."""
    from driftline.learners.embedding import BackboneRiverLearner

    out: dict[str, Learner] = {}
    loaded: dict[str, BackboneRiverLearner] = {}  # backbone config (JSON) -> the first learner on it
    for name, cfg in cfgs.items():
        key = cfg.backbone.model_dump_json()
        first = loaded.get(key)
        shareable = cfg.backbone.kind != "identity" and name not in exclusive and cfg.name not in TORCH_HEADS \
            and cfg.name not in CONTINUAL
        if first is not None and shareable:
            out[name] = first.sharing(cfg)
            if cfg.start_from:
                load_pretrained(out[name], cfg.start_from)
            log.info("model %s shares the %s backbone of an earlier model", name, cfg.backbone.kind)
            continue
        learner = build_learner(cfg)
        out[name] = learner
        if shareable and isinstance(learner, BackboneRiverLearner):
            loaded.setdefault(key, learner)
    return out
