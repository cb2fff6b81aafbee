"""Image and tensor events: what decodes, and every reason a payload is refused (each a dead-letter reason with a
message naming what was wrong)."""

from __future__ import annotations

import base64
import io

import numpy as np
import orjson
import pytest
from PIL import Image

from driftline.core import Event
from driftline.media import TensorData, encode_image
from driftline.settings import InputLimits
from driftline.stream.codec import DecodeError, decode_event, encode_event


def _png(w: int = 8, h: int = 8, mode: str = "L", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    return encode_image(Image.fromarray(rng.integers(0, 255, shape).astype(np.uint8), mode=mode))


def _file(img: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def _decode(obj: dict[str, object], limits: InputLimits | None = None) -> Event:
    return decode_event(orjson.dumps(obj), max_bytes=50_000_000, limits=limits or InputLimits())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_an_image_of_each_format_decodes_once_and_round_trips(fmt: str) -> None:
    img = Image.fromarray(np.full((6, 9, 3), 200, dtype=np.uint8))
    event = _decode({"id": "a", "image": _file(img, fmt), "label": 3})
    assert event.image is not None
    decoded = event.image.image()
    assert decoded.size == (9, 6) and decoded.format == fmt
    assert event.image.image() is decoded  # decoded by the codec, kept with the event
    again = decode_event(encode_event(event))
    assert again == event and again.image is not None and again.image.b64 == event.image.b64


def test_a_tensor_decodes_to_its_shape_dtype_and_values() -> None:
    arr = np.arange(12, dtype=np.float32).reshape(1, 3, 4) / 7
    event = _decode({"id": "t", "tensor": TensorData.of(arr).model_dump()})
    assert event.tensor is not None
    out = event.tensor.array()
    assert out.dtype == np.float32 and out.shape == (1, 3, 4) and np.array_equal(out, arr)
    big_endian = arr.astype(">f4")
    assert np.array_equal(TensorData.of(big_endian).array(), arr)  # sent little-endian whatever the source


def _truncated_png() -> str:
    raw = base64.b64decode(_png(64, 64))
    return base64.b64encode(raw[: len(raw) // 2]).decode()


def _bomb() -> str:
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, "PNG")  # 25 M pixels in about 25 kB
    return base64.b64encode(buf.getvalue()).decode()


def _tensor(shape: list[int], dtype: str, n_bytes: int | None = None, fill: float = 0.0) -> dict[str, object]:
    itemsize = np.dtype(dtype).itemsize if dtype in np.sctypeDict else 4
    raw = np.full(int(np.prod(shape)), fill, dtype="<f4").tobytes() if dtype == "float32" else \
        bytes(int(np.prod(shape)) * itemsize)
    if n_bytes is not None:
        raw = raw[:n_bytes]
    return {"shape": shape, "dtype": dtype, "data": base64.b64encode(raw).decode()}


BAD = [
    ({"image": "not base64 at all!"}, "not_base64", "image: not base64"),
    ({"image": base64.b64encode(b"hello, I am text").decode()}, "undecodable_image", "not a PNG/JPEG/WEBP file"),
    ({"image": _truncated_png()}, "undecodable_image", "does not decode"),
    ({"image": _file(Image.new("L", (4, 4)), "GIF")}, "undecodable_image", "not a PNG/JPEG/WEBP"),
    ({"image": _bomb()}, "decompression_bomb", "5000x5000 = 25000000 pixels, over the limit of 4000000"),
    ({"image": _png(9000, 1)}, "image_too_large", "9000x1"),
    ({"image": 17}, "wrong_type", "image: Input should be a non-empty string"),
    ({"image": ""}, "wrong_type", "image: Input should be a non-empty string"),
    ({"tensor": _tensor([2, 2], "float32", n_bytes=12)}, "tensor_shape", "data is 12 bytes, shape [2, 2] of float32 "
                                                                          "needs 16"),
    ({"tensor": _tensor([2, 0], "float32")}, "tensor_shape", "dimension below 1"),
    ({"tensor": _tensor([2], "complex64")}, "tensor_dtype", "dtype 'complex64' is not one of"),
    ({"tensor": _tensor([3], "float32", fill=float("nan"))}, "non_finite", "3 of its 3 values are NaN or infinite"),
    ({"tensor": _tensor([3], "float32", fill=float("inf"))}, "non_finite", "NaN or infinite"),
    ({"tensor": _tensor([3000, 3000], "uint8")}, "tensor_too_large", "9000000 elements, over the limit"),
    ({"tensor": _tensor([1] * 9, "uint8")}, "tensor_too_large", "9 dimensions"),
    ({"tensor": {"shape": [1], "dtype": "float32"}}, "invalid_event", "tensor.data"),
    ({"tensor": {**_tensor([1], "float32"), "order": "F"}}, "invalid_event", "tensor.order: unknown field"),
    ({"tensor": {**_tensor([1], "float32"), "data": "@@@@"}}, "not_base64", "tensor.data: not base64"),
    ({"image": _png(), "tensor": _tensor([1], "float32")}, "invalid_event", "both an image and a tensor"),
]


@pytest.mark.parametrize(("payload", "reason", "message"), BAD, ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(BAD)])
def test_a_bad_image_or_tensor_is_refused_with_its_reason(payload: dict[str, object], reason: str,
                                                           message: str) -> None:
    with pytest.raises(DecodeError) as info:
        _decode({"id": "x", **payload})
    assert info.value.reason == reason
    assert message in str(info.value)


def test_the_limits_are_the_configured_ones() -> None:
    image = {"id": "x", "image": _png(40, 30)}
    assert _decode(image).image is not None
    with pytest.raises(DecodeError, match=r"declares 40x30 = 1200 pixels, over the limit of 1000 "
                                          r"\(limits.max_image_pixels\)") as info:
        _decode(image, InputLimits(max_image_pixels=1000))
    assert info.value.reason == "decompression_bomb"
    with pytest.raises(DecodeError, match=r"over the limit of 100 \(limits.max_image_bytes\)"):
        _decode(image, InputLimits(max_image_bytes=100))
    with pytest.raises(DecodeError, match="not a JPEG file"):
        _decode(image, InputLimits(image_formats=("JPEG",)))
    tensor = {"id": "t", "tensor": _tensor([4], "float64")}
    with pytest.raises(DecodeError, match="dtype 'float64' is not one of float32"):
        _decode(tensor, InputLimits(tensor_dtypes=("float32",)))


def test_an_event_needs_some_payload_and_names_what_it_carries() -> None:
    with pytest.raises(DecodeError, match="none of features, text, image or tensor"):
        _decode({"id": "x", "label": 1})
    event = _decode({"id": "x", "image": _png(), "features": {"camera": 3}})
    assert event.payloads() == "`features` and `image`"


def test_the_event_schema_documents_images_and_tensors() -> None:
    schema = Event.model_json_schema()
    assert schema["properties"]["image"]["anyOf"][0] == {"type": "string", "contentEncoding": "base64", "minLength": 1,
                                                         "description": "base64 of a PNG, JPEG or WebP file"}
    assert set(schema["$defs"]["TensorData"]["properties"]) == {"shape", "dtype", "data"}
