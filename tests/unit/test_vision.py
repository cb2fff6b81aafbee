"""Vision backbones on image and tensor events: preprocessing as configured, a real pretrained CNN (the packaged
MNIST network) transferring to scikit-learn's digits, torchvision architectures by name, TorchScript on tensors,
raw pixels, fine-tuning the top layers of a non-Sequential network, and every input a backbone refuses."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from driftline.core import INPUT_KIND_MISMATCH, Event, InputError
from driftline.errors import ConfigError
from driftline.learners.backbone_registry import load_backbone
from driftline.learners.factory import build_learner
from driftline.media import TensorData, encode_image
from driftline.settings import BackboneSettings, ModelSettings
from driftline.testing import DIGITS_CNN_BACKBONE, digit_images


def _bb(**kw: Any) -> BackboneSettings:
    return BackboneSettings.model_validate({"device": "cpu", **kw})


@pytest.fixture(scope="module")
def digits() -> list[Event]:
    return [Event.model_validate(e) for e in digit_images(seed=0)]


def test_preprocessing_matches_torchvision_transforms() -> None:
    from torchvision import transforms

    from driftline.learners.config import ImagePrepSettings
    from driftline.learners.inputs import ImageInput

    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 255, (37, 53, 3)).astype(np.uint8), "RGB")
    prep = ImagePrepSettings(mode="RGB", resize=24, center_crop=[20, 22], pad=(1, 2, 3, 4), mean=[0.4, 0.5, 0.6],
                             std=[0.2, 0.25, 0.3])
    ours = ImageInput("torch", prep).array(img)
    theirs = transforms.Compose([
        transforms.Resize(24, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True),
        transforms.CenterCrop([20, 22]), transforms.Pad((1, 2, 3, 4)), transforms.ToTensor(),
        transforms.Normalize([0.4, 0.5, 0.6], [0.2, 0.25, 0.3]),
    ])(img).numpy()
    assert ours.shape == theirs.shape == (3, 26, 26)
    assert np.abs(ours - theirs).max() < 1e-5
    grey = ImageInput("torch", ImagePrepSettings(mode="L", resize=(10, 10))).array(img)
    assert grey.shape == (1, 10, 10) and grey.min() >= 0.0 and grey.max() <= 1.0


def test_the_packaged_mnist_cnn_transfers_to_digits_zero_shot(digits: list[Event]) -> None:
    """Its own output layer, untouched, on scikit-learn's digits: a real pretrained network, really transferring
    (chance is 0.10; measured 0.82 on all 1,797)."""
    backbone = load_backbone(_bb(**{**DIGITS_CNN_BACKBONE, "output": None}))
    assert backbone is not None and backbone.dim == 10
    logits = backbone.embed(digits)
    accuracy = float((logits.argmax(1).numpy() == np.array([e.label for e in digits])).mean())
    assert accuracy > 0.75


def test_the_output_submodule_is_the_embedding_and_equals_the_network_cut_there(digits: list[Event]) -> None:
    from digit_recognizer.model import CNN

    backbone = load_backbone(_bb(**{**DIGITS_CNN_BACKBONE, "output": "conv_layers"}))
    assert backbone is not None and backbone.dim == 128 * 3 * 3 and backbone.n_layers == 9
    net = CNN()
    net.load_state_dict(torch.load(backbone.cfg.path and _packaged_weights(), weights_only=True))
    net.eval()
    x = torch.stack([torch.from_numpy(backbone.input.array(e.image.image())) for e in digits[:16]])  # type: ignore[attr-defined, union-attr]
    with torch.no_grad():
        want = net.conv_layers(x).reshape(16, -1)
    assert torch.allclose(backbone.embed(digits[:16]), want, atol=1e-5)
    assert backbone.fingerprint["output"] == "conv_layers" and backbone.fingerprint["image"]["pad"] == 4


def _packaged_weights() -> Path:
    import importlib.resources

    return Path(str(importlib.resources.files("digit_recognizer").joinpath("models/handwriting_model.pth")))


def test_a_river_head_on_the_frozen_cnn_beats_the_same_head_on_raw_pixels(digits: list[Event]) -> None:
    def prequential(backbone: dict[str, Any], n: int = 400) -> float:
        learner = build_learner(ModelSettings(name="SoftmaxRegression", backbone=backbone, seed=1))
        stream = digits[:n]
        learner.prepare_batch(stream)
        hits = 0
        for e in stream:
            hits += learner.predict_one(e).value == e.label
            assert e.label is not None
            learner.learn_one(e, e.label)
        return hits / n

    cnn = prequential({**DIGITS_CNN_BACKBONE, "device": "cpu"})
    pixels = prequential({"kind": "pixels", "image": {"mode": "L", "resize": [8, 8]}})
    assert cnn > pixels + 0.03, (cnn, pixels)


def test_torchvision_architecture_by_name_with_local_weights(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(num_classes=4).state_dict(), path)
    cfg = {"kind": "torchvision", "arch": "resnet18", "args": {"num_classes": 4}, "path": str(path),
           "image": {"resize": 40, "center_crop": 32}, "output": "avgpool"}
    backbone = load_backbone(_bb(**cfg))
    assert backbone is not None and backbone.dim == 512 and backbone.n_layers == 13
    rgb = Event(id="a", image=encode_image(Image.new("RGB", (60, 45), (200, 10, 10))))  # type: ignore[arg-type]
    assert backbone.embed([rgb, rgb]).shape == (2, 512)
    with pytest.raises(ConfigError, match="'resnet1800' is not a torchvision architecture"):
        load_backbone(_bb(**{**cfg, "arch": "resnet1800"}))
    with pytest.raises(ConfigError, match="do not fit torchvision resnet34"):
        load_backbone(_bb(**{**cfg, "arch": "resnet34"}))
    with pytest.raises(ConfigError, match="no submodule 'pool5'; its submodules: conv1, bn1"):
        load_backbone(_bb(**{**cfg, "output": "pool5"}))


def test_torchscript_on_tensor_events(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    backbone = load_backbone(_bb(kind="torchscript", path=str(path), input="tensor", tensor_shape=[2, 6, 6]))
    assert backbone is not None and backbone.dim == 4
    arr = np.random.default_rng(0).normal(size=(2, 6, 6)).astype(np.float32)
    ev = Event(id="t", tensor=TensorData.of(arr))
    with torch.no_grad():
        want = net(torch.from_numpy(arr)[None])
    assert torch.allclose(backbone.embed([ev]), want, atol=1e-6)
    wrong = Event(id="w", tensor=TensorData.of(np.zeros((2, 5, 6), np.float32)))
    with pytest.raises(InputError, match=r"tensor: shape \[2, 5, 6\], the backbone takes \[2, 6, 6\]") as info:
        backbone.check(wrong)
    assert info.value.reason == "tensor_shape"


def test_every_model_refuses_the_payloads_it_cannot_read(digits: list[Event]) -> None:
    image_model = build_learner(ModelSettings(name="SoftmaxRegression", backbone={**DIGITS_CNN_BACKBONE,
                                                                                  "device": "cpu"}))
    tabular = Event(id="f", features={"x": 1.0})
    text = Event(id="t", text="a document")
    for event, carries in ((tabular, "`features`"), (text, "`text`")):
        with pytest.raises(InputError, match=f"reads `image`, and this event has {carries}") as info:
            image_model.predict_one(event)
        assert info.value.reason == INPUT_KIND_MISMATCH
    tabular_model = build_learner(ModelSettings(name="GaussianNB"))
    with pytest.raises(InputError, match="learns from `features`, and this event has `image`") as info:
        tabular_model.predict_one(digits[0])
    assert info.value.reason == INPUT_KIND_MISMATCH
    # an event that did not come through the codec (a replayed file, a user's test) is checked when it is read
    broken = Event(id="b", image="aGVsbG8=")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="image: 5 bytes that are not a PNG/JPEG/WEBP file") as info:
        image_model.predict_one(broken)
    assert info.value.reason == "undecodable_image"


def test_settings_name_what_an_image_backbone_lacks() -> None:
    with pytest.raises(ValueError, match="image is required with input 'image'"):
        BackboneSettings(kind="torchvision", arch="resnet18", path="w.pt")
    with pytest.raises(ValueError, match="resize to \\[height, width\\] or center_crop"):
        BackboneSettings(kind="pixels", image={"resize": 32})
    with pytest.raises(ValueError, match="mean has 2 values; mode 'RGB' has 3 channel"):
        BackboneSettings(kind="pixels", image={"resize": [8, 8], "mean": [0.1, 0.2]})
    with pytest.raises(ValueError, match="tensor_shape is required"):
        BackboneSettings(kind="pixels", input="tensor")
    with pytest.raises(ValueError, match="input 'image' needs a network"):
        BackboneSettings(kind="sentence-transformers", input="image")
    with pytest.raises(ConfigError, match=r"package 'digit_recognizer' has no file 'models/nope\.pth'"):
        load_backbone(_bb(**{**DIGITS_CNN_BACKBONE, "path": "digit_recognizer:models/nope.pth"}))


def test_fine_tuning_trains_the_top_conv_block_of_the_cnn_and_nothing_below(digits: list[Event]) -> None:
    conv = {**DIGITS_CNN_BACKBONE, "output": "conv_layers", "device": "cpu"}
    learner = build_learner(ModelSettings(name="TorchLinear", backbone=conv, params={"unfreeze_top_k": 3, "lr": 0.01},
                                          seed=3))
    backbone = learner.backbone  # type: ignore[attr-defined]
    before = {k: v.clone() for k, v in backbone.module.state_dict().items()}
    stream = digits[:64]
    learner.prepare_batch(stream)
    for e in stream:
        learner.predict_one(e)
        assert e.label is not None
        learner.learn_one(e, e.label)
    top = learner.top.modules  # type: ignore[attr-defined]
    assert [type(m).__name__ for m in top] == ["Conv2d", "ReLU", "MaxPool2d"]
    trained_top = top[0].weight.detach()
    frozen_net = backbone.module.state_dict()
    assert all(torch.equal(frozen_net[k], before[k]) for k in before if not k.startswith("conv_layers.6"))
    assert not torch.equal(trained_top, before["conv_layers.6.weight"])  # the learner trains its own copy
    state = pickle.loads(pickle.dumps(learner.state_dict()))
    again = build_learner(ModelSettings(name="TorchLinear", backbone=conv, params={"unfreeze_top_k": 3, "lr": 0.01},
                                        seed=3))
    again.load_state_dict(state)
    probe = digits[100:120]
    assert [learner.predict_one(e).value for e in probe] == [again.predict_one(e).value for e in probe]


def test_continual_learner_on_the_image_backbone_with_its_top_unfrozen(digits: list[Event]) -> None:
    learner = build_learner(ModelSettings(
        name="Continual", backbone={**DIGITS_CNN_BACKBONE, "output": "conv_layers", "device": "cpu"}, seed=5,
        params={"strategy": "Replay", "strategy_params": {"mem_size": 50}, "window_events": 50, "unfreeze_top_k": 3,
                "synchronous": True, "lr": 0.01}))
    stream = digits[:400]
    hits = []
    for i in range(0, len(stream), 50):
        chunk = stream[i: i + 50]
        learner.prepare_batch(chunk)
        for e in chunk:
            hits.append(learner.predict_one(e).value == e.label)
            assert e.label is not None
            learner.learn_one(e, e.label)
    assert learner.updates == 400
    assert sum(hits[:50]) < 15 and sum(hits[-100:]) / 100 > 0.7, (sum(hits[:50]), sum(hits[-100:]))
    state = pickle.loads(pickle.dumps(learner.state_dict()))
    assert state["unfreeze_top_k"] == 3


def test_bf16_autocast_gives_float32_embeddings_close_to_fp32(digits: list[Event]) -> None:
    fp32 = load_backbone(_bb(**{**DIGITS_CNN_BACKBONE, "output": None}))
    bf16 = load_backbone(_bb(**{**DIGITS_CNN_BACKBONE, "output": None, "precision": "bf16"}))
    assert fp32 is not None and bf16 is not None
    a, b = fp32.embed(digits[:200]), bf16.embed(digits[:200])
    assert b.dtype == torch.float32 and not torch.equal(a, b)  # it did run in bf16
    assert float((a - b).norm() / a.norm()) < 0.03
    assert float((a.argmax(1) == b.argmax(1)).float().mean()) > 0.98
