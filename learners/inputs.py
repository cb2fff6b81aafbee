"""What a network backbone reads from an event, as a batch tensor: the named numeric ``features``, the
``image`` (decoded, then preprocessed as `ImagePrepSettings` says) or the ``tensor`` (of a fixed shape).

Each reader checks one event (`InputError` with the dead-letter reason when the event cannot be read), turns
a batch of checked events into one float32 tensor, and makes a probe input of the right shape, with which the
backbone checks at start-up that the network takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError
from driftline.media import TENSOR_SHAPE, MediaError, TensorData

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from driftline.learners.config import BackboneSettings, ImagePrepSettings

INVALID_FEATURES = "invalid_features"


class InputReader(Protocol):
    """One kind of network input."""

    kind: str
    shape: tuple[int, ...]  # of one event's input

    def check(self, x: Event) -> None: ...

    def batch(self, events: Sequence[Event]) -> torch.Tensor: ...

    def probe_event(self) -> Event: ...

    def describe(self) -> dict[str, Any]: ...


class FeatureInput:
    """The named numeric features, in order, as a vector."""

    kind = "features"

    def __init__(self, backbone: str, names: list[str]) -> None:
        self.backbone = backbone
        self.names = names
        self.shape: tuple[int, ...] = (len(names),)

    def check(self, x: Event) -> None:
        if not x.features:
            raise InputError(INPUT_KIND_MISMATCH, f"the {self.backbone} backbone reads `features` "
                             f"({', '.join(self.names)}), and this event has {x.payloads()}")
        missing = [f for f in self.names if f not in x.features]
        if missing:
            raise InputError(INVALID_FEATURES, f"the {self.backbone} backbone needs features {missing}, "
                             "which this event lacks")
        bad = [f for f in self.names if not isinstance(x.features[f], int | float)]
        if bad:
            raise InputError(INVALID_FEATURES, f"the {self.backbone} backbone needs numeric features; "
                             f"{', '.join(f'{f}={x.features[f]!r}' for f in bad)} are not numbers")

    def batch(self, events: Sequence[Event]) -> torch.Tensor:
        import torch

        names = self.names
        return torch.tensor([[float(e.features[n]) for n in names] for e in events], dtype=torch.float32)

    def probe_event(self) -> Event:
        return Event(id="probe", features={f: 0.0 for f in self.names})

    def describe(self) -> dict[str, Any]:
        return {"features": self.names}


def _size(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (v[0], v[1])


class ImageInput:
    """The event's image, preprocessed: mode, resize, centre crop, pad, [0, 1], normalise -> [C, H, W]."""

    kind = "image"

    def __init__(self, backbone: str, prep: ImagePrepSettings) -> None:
        self.backbone = backbone
        self.prep = prep
        channels = 1 if prep.mode == "L" else 3
        self._mean = np.asarray(prep.mean if prep.mean is not None else [0.0], dtype=np.float32).reshape(-1, 1, 1)
        self._std = np.asarray(prep.std if prep.std is not None else [1.0], dtype=np.float32).reshape(-1, 1, 1)
        # every image becomes one size: the crop's or the resize's (settings require one of them), then the pad
        p = prep
        fixed = p.center_crop if p.center_crop is not None else p.resize
        assert fixed is not None and not (p.center_crop is None and isinstance(p.resize, int))
        self._probe_size = _size(fixed)
        left, top, right, bottom = (0,) * 4 if p.pad is None else (p.pad,) * 4 if isinstance(p.pad, int) else p.pad
        h, w = self._probe_size
        self.shape: tuple[int, ...] = (channels, h + top + bottom, w + left + right)

    def _resized(self, h: int, w: int) -> tuple[int, int]:
        r = self.prep.resize
        assert r is not None
        if isinstance(r, int):  # the shorter side becomes r (torchvision's Resize(int))
            return (r, max(1, round(w * r / h))) if h <= w else (max(1, round(h * r / w)), r)
        return r[0], r[1]

    def _decoded(self, x: Event) -> Image.Image:
        if x.image is None:
            raise InputError(INPUT_KIND_MISMATCH, f"the {self.backbone} backbone reads `image`, and this event "
                                                  f"has {x.payloads()}")
        try:
            return x.image.image()
        except MediaError as exc:
            raise InputError(exc.reason, str(exc)) from None

    def check(self, x: Event) -> None:
        self._decoded(x)  # any image then becomes the network's input size

    def array(self, img: Image.Image) -> np.ndarray:
        from PIL import Image, ImageOps

        p = self.prep
        if img.mode != p.mode:
            img = img.convert(p.mode)
        if p.resize is not None:
            h, w = self._resized(img.height, img.width)
            if (h, w) != (img.height, img.width):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
        if p.center_crop is not None:
            ch, cw = _size(p.center_crop)
            left, top = round((img.width - cw) / 2), round((img.height - ch) / 2)
            img = img.crop((left, top, left + cw, top + ch))  # outside the image: zeros, as torchvision pads
        if p.pad is not None:
            img = ImageOps.expand(img, border=p.pad if isinstance(p.pad, int) else tuple(p.pad), fill=0)
        a = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return (a - self._mean) / self._std

    def batch(self, events: Sequence[Event]) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.stack([self.array(self._decoded(e)) for e in events]))

    def probe_event(self) -> Event:
        from PIL import Image

        from driftline.media import encode_image

        h, w = self._probe_size
        return Event(id="probe", image=encode_image(Image.new(self.prep.mode, (w, h))))

    def describe(self) -> dict[str, Any]:
        return {"image": self.prep.model_dump(mode="json")}


class TensorInput:
    """The event's tensor, of one fixed shape, as float32."""

    kind = "tensor"

    def __init__(self, backbone: str, shape: list[int]) -> None:
        self.backbone = backbone
        self.shape: tuple[int, ...] = tuple(shape)

    def _array(self, x: Event) -> np.ndarray:
        if x.tensor is None:
            raise InputError(INPUT_KIND_MISMATCH, f"the {self.backbone} backbone reads `tensor`, and this event "
                                                  f"has {x.payloads()}")
        try:
            a = x.tensor.array()
        except MediaError as exc:
            raise InputError(exc.reason, str(exc)) from None
        if a.shape != self.shape:
            raise InputError(TENSOR_SHAPE, f"tensor: shape {list(a.shape)}, the backbone takes {list(self.shape)} "
                                           "(model.backbone.tensor_shape)")
        return a

    def check(self, x: Event) -> None:
        self._array(x)

    def batch(self, events: Sequence[Event]) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.stack([self._array(e) for e in events]).astype(np.float32, copy=False))

    def probe_event(self) -> Event:
        return Event(id="probe", tensor=TensorData.of(np.zeros(self.shape, dtype=np.float32)))

    def describe(self) -> dict[str, Any]:
        return {"tensor_shape": list(self.shape)}


def make_input(cfg: BackboneSettings) -> InputReader:
    """The reader ``cfg.input`` names."""
    if cfg.input == "image":
        assert cfg.image is not None  # settings enforce it
        return ImageInput(cfg.kind, cfg.image)
    if cfg.input == "tensor":
        assert cfg.tensor_shape is not None  # settings enforce it
        return TensorInput(cfg.kind, cfg.tensor_shape)
    assert cfg.features is not None  # settings enforce it
    return FeatureInput(cfg.kind, list(cfg.features))
