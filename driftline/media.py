"""Image and tensor payloads of events: their wire form, the bounds they are decoded within, and decoding.

An event may carry, besides (or instead of) ``features`` and ``text``:

- ``image``: base64 of PNG, JPEG or WebP bytes (decoded with Pillow)::

      {"id": "ev-1", "image": "iVBORw0KGgo...", "label": 7}

- ``tensor``: a raw little-endian array, its shape and dtype::

      {"id": "ev-2", "tensor": {"shape": [1, 28, 28], "dtype": "float32", "data": "AAAAAA..."}, "label": 7}

Decoding happens within `MediaLimits` (configured under ``limits:``, separate from the string bounds of text
and feature values); everything wrong raises `MediaError` with a bounded reason code (the dead-letter reason)
and a message naming what was wrong. An `ImageData` keeps its decoded image, so an image is decoded once
(by the codec, which checks it before the event enters the pipeline) however often it is read afterwards.

This module imports nothing of driftline's (the event schema in `driftline.core` uses it).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, StrictInt, StrictStr
from pydantic_core import PydanticCustomError, core_schema

if TYPE_CHECKING:
    from PIL import Image

# Dead-letter reason codes (README, "Dead letters").
NOT_BASE64 = "not_base64"
UNDECODABLE_IMAGE = "undecodable_image"
IMAGE_TOO_LARGE = "image_too_large"
DECOMPRESSION_BOMB = "decompression_bomb"
TENSOR_TOO_LARGE = "tensor_too_large"
TENSOR_DTYPE = "tensor_dtype"
TENSOR_SHAPE = "tensor_shape"
NON_FINITE = "non_finite"

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
DType = Literal["float16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool"]
DTYPES: tuple[DType, ...] = get_args(DType)


class MediaError(ValueError):
    """An image or tensor payload that cannot be decoded within the limits; ``reason`` is a bounded code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """What decoding an image or a tensor accepts at most (``limits.*`` in the settings)."""

    max_image_bytes: int = 4_000_000  # the encoded file, after base64
    max_image_pixels: int = 4_000_000  # width x height the file declares (more: a decompression bomb)
    max_image_side: int = 8192  # width or height
    image_formats: tuple[str, ...] = IMAGE_FORMATS
    max_tensor_elements: int = 4_000_000
    max_tensor_dims: int = 8
    tensor_dtypes: tuple[str, ...] = DTYPES


DEFAULT_MEDIA_LIMITS = MediaLimits()


def _b64(text: str, what: str, max_bytes: int, reason_too_large: str, bound: str) -> bytes:
    if len(text) // 4 * 3 > max_bytes + 2:
        raise MediaError(reason_too_large, f"{what}: about {len(text) // 4 * 3} bytes once decoded, over the limit of "
                                           f"{max_bytes} ({bound})")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(NOT_BASE64, f"{what}: not base64 ({exc})") from None


def decode_image(text: str, limits: MediaLimits = DEFAULT_MEDIA_LIMITS) -> Image.Image:
    """Base64 of an image file -> a fully decoded Pillow image (its first frame); raises MediaError."""
    from PIL import Image, UnidentifiedImageError

    raw = _b64(text, "image", limits.max_image_bytes, IMAGE_TOO_LARGE, "limits.max_image_bytes")
    if len(raw) > limits.max_image_bytes:
        raise MediaError(IMAGE_TOO_LARGE, f"image: {len(raw)} bytes, over the limit of {limits.max_image_bytes} "
                                          "(limits.max_image_bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw), formats=list(limits.image_formats))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(DECOMPRESSION_BOMB, f"image: {exc}") from None
    except UnidentifiedImageError:
        raise MediaError(UNDECODABLE_IMAGE, f"image: {len(raw)} bytes that are not a {'/'.join(limits.image_formats)} "
                                            f"file (starts with {raw[:8]!r})") from None
    except Exception as exc:
        raise MediaError(UNDECODABLE_IMAGE, f"image: cannot read the {len(raw)}-byte file: {exc}") from None
    w, h = img.size
    if w * h > limits.max_image_pixels:
        raise MediaError(DECOMPRESSION_BOMB, f"image: the {img.format} file ({len(raw)} bytes) declares {w}x{h} = "
                                             f"{w * h} pixels, over the limit of {limits.max_image_pixels} "
                                             "(limits.max_image_pixels)")
    if max(w, h) > limits.max_image_side or min(w, h) < 1:
        raise MediaError(IMAGE_TOO_LARGE, f"image: {w}x{h}, a side outside 1..{limits.max_image_side} "
                                          "(limits.max_image_side)")
    try:
        img.load()
    except Exception as exc:
        raise MediaError(UNDECODABLE_IMAGE, f"image: the {img.format} file ({w}x{h}, {len(raw)} bytes) does not "
                                            f"decode: {exc}") from None
    return img


def encode_image(img: Image.Image, fmt: str = "PNG") -> str:
    """A Pillow image as the base64 an event's ``image`` field carries."""
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class ImageData:
    """An event's ``image``: the base64 text as sent (what is serialised, compared and hashed) and, once
    decoded, the image."""

    __slots__ = ("_image", "b64")

    def __init__(self, b64: str) -> None:
        self.b64 = b64
        self._image: Image.Image | None = None

    def image(self, limits: MediaLimits = DEFAULT_MEDIA_LIMITS) -> Image.Image:
        """The decoded image (decoded on the first call, within ``limits``); raises MediaError."""
        if self._image is None:
            self._image = decode_image(self.b64, limits)
        return self._image

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageData) and other.b64 == self.b64

    def __hash__(self) -> int:
        return hash(self.b64)

    def __repr__(self) -> str:
        shown = self.b64 if len(self.b64) <= 24 else self.b64[:21] + "..."
        return f"ImageData({shown!r}, {len(self.b64)} chars)"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce, serialization=core_schema.plain_serializer_function_ser_schema(lambda v: v.b64))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
                                     ) -> dict[str, Any]:
        return {"type": "string", "contentEncoding": "base64", "minLength": 1,
                "description": "base64 of a PNG, JPEG or WebP file"}

    @classmethod
    def _coerce(cls, value: Any) -> ImageData:
        if isinstance(value, ImageData):
            return value
        if type(value) is not str or not value:
            raise PydanticCustomError("string_type", "Input should be a non-empty string: base64 of a PNG, JPEG or "
                                                     "WebP file")
        return cls(value)


class TensorData(BaseModel):
    """An event's ``tensor``: ``shape``, ``dtype`` (a numpy name) and ``data``, base64 of the raw little-endian
    array in C order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: list[StrictInt] = Field(min_length=0, max_length=64)
    dtype: StrictStr = Field(max_length=16)
    data: StrictStr

    def array(self, limits: MediaLimits = DEFAULT_MEDIA_LIMITS) -> np.ndarray:
        """The array (read-only), decoded on the first call within ``limits`` and kept (the codec checks it, a
        backbone reads it); raises MediaError naming what is wrong."""
        decoded: np.ndarray | None = self.__dict__.get("_decoded")  # not a field: equality and dumps ignore it
        if decoded is None:
            decoded = self._decode(limits)
            self.__dict__["_decoded"] = decoded
        return decoded

    def _decode(self, limits: MediaLimits) -> np.ndarray:
        if len(self.shape) > limits.max_tensor_dims:
            raise MediaError(TENSOR_TOO_LARGE, f"tensor: {len(self.shape)} dimensions, over the limit of "
                                               f"{limits.max_tensor_dims} (limits.max_tensor_dims)")
        if any(d < 1 for d in self.shape):
            raise MediaError(TENSOR_SHAPE, f"tensor: shape {self.shape} has a dimension below 1")
        n = math.prod(self.shape)
        if n > limits.max_tensor_elements:
            raise MediaError(TENSOR_TOO_LARGE, f"tensor: shape {self.shape} is {n} elements, over the limit of "
                                               f"{limits.max_tensor_elements} (limits.max_tensor_elements)")
        if self.dtype not in limits.tensor_dtypes:
            raise MediaError(TENSOR_DTYPE, f"tensor: dtype {self.dtype!r} is not one of "
                                           f"{', '.join(limits.tensor_dtypes)} (limits.tensor_dtypes)")
        dtype = np.dtype(self.dtype).newbyteorder("<")
        raw = _b64(self.data, "tensor.data", n * dtype.itemsize, TENSOR_SHAPE,
                   f"shape {self.shape} of {self.dtype} needs {n * dtype.itemsize}")
        if len(raw) != n * dtype.itemsize:
            raise MediaError(TENSOR_SHAPE, f"tensor: data is {len(raw)} bytes, shape {self.shape} of {self.dtype} "
                                           f"needs {n * dtype.itemsize}")
        arr = np.frombuffer(raw, dtype=dtype).reshape(self.shape)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise MediaError(NON_FINITE, f"tensor: {bad} of its {n} values are NaN or infinite")
        return arr

    @classmethod
    def of(cls, arr: np.ndarray) -> TensorData:
        """The payload of an array."""
        a = np.ascontiguousarray(arr)
        le = a.astype(a.dtype.newbyteorder("<"), copy=False)
        return cls(shape=list(a.shape), dtype=a.dtype.name, data=base64.b64encode(le.tobytes()).decode("ascii"))
