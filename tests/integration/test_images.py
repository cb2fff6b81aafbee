"""Image events end to end on a real broker: a folder of images pretrained on, produced, served by `driftline run`
(the packaged MNIST CNN + a River head), replayed; bad images and tensors dead-lettered with their reasons."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.media import TensorData
from driftline.testing import DIGITS_CNN_BACKBONE, digit_images
from tests.helpers import ServiceProcess, produce_events, read_topic, wait_for, write_config
from tests.integration.test_cli import _cli

pytestmark = [pytest.mark.integration]

MODEL = {"name": "SoftmaxRegression", "backbone": DIGITS_CNN_BACKBONE}


def _folder(root: Path, images: list[dict[str, Any]]) -> Path:
    """``root/<label>/<id>.png``, as torchvision's ImageFolder reads it."""
    for e in images:
        d = root / str(e["label"])
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{e['id']}.png").write_bytes(base64.b64decode(e["image"]))
    return root


def test_images_pretrained_produced_served_and_replayed(kafka_bootstrap: str, topic_prefix: str,
                                                        tmp_path: Path) -> None:
    images = digit_images(seed=4)
    source = _folder(tmp_path / "source", images[:400])
    target = _folder(tmp_path / "target", images[400:700])
    (target / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # dead-lettered, not fatal
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=MODEL,
                       checkpoint={"every_seconds": 2})

    out = _cli("pretrain", "--config", str(cfg), "--images", str(source), "--output", str(tmp_path / "m.dlm"),
               "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"pretrained on images:{source}: 400 labeled events" in out.stderr

    out = _cli("produce", "--images", str(target), "--topic", f"{topic_prefix}-in", "--bootstrap-servers",
               kafka_bootstrap, "--id-prefix", "t/", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"produced 301 events to {topic_prefix}-in" in out.stderr
    tensor = TensorData.of(np.zeros((1, 28, 28), np.float32)).model_dump()
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", [
        {"id": "tensor-1", "tensor": tensor, "label": 1},  # the model reads images
        {"id": "tabular-1", "features": {"x": 1.0}, "label": 1},
        {"id": "nan-1", "tensor": {**tensor, "data": base64.b64encode(np.full(784, np.nan, "<f4").tobytes()).decode()}},
    ])

    run_cfg = write_config(tmp_path / "run.yaml", kafka_bootstrap, topic_prefix,
                           model={**MODEL, "start_from": str(tmp_path / "m.dlm")}, checkpoint={"every_seconds": 2})
    svc = ServiceProcess(run_cfg, tmp_path / "svc.log")
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= 304, 180, "304 consumed")
    finally:
        assert svc.terminate() == 0, svc.log()
    preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
    assert len(preds) == 300
    assert preds[0]["model_updates"] == 400  # served from the pretrained model from the first image
    labels = {f"t/{e['label']}/{e['id']}.png": e["label"] for e in images[400:700]}
    accuracy = sum(p["prediction"] == labels[p["id"]] for p in preds) / len(preds)
    assert accuracy > 0.85, accuracy
    dead = {json.loads(r.value)["id"]: dict(r.headers)["driftline.reason"].decode()
            for r in read_topic(kafka_bootstrap, f"{topic_prefix}-dlq")}
    assert dead == {"t/3/broken.png": "undecodable_image", "tensor-1": "input_kind_mismatch",
                    "tabular-1": "input_kind_mismatch", "nan-1": "non_finite"}

    out = _cli("replay", "--config", str(cfg), "--images", str(target), "--summary", str(tmp_path / "s.json"),
               "--no-progress")
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["predicted"] == 300 and summary["learned"] == 300
    assert summary["dead_lettered"] == {"undecodable_image": 1}
    assert summary["cumulative"] > 0.6  # from scratch here: the frozen CNN's features, a head learning online
