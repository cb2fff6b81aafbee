"""`driftline pretrain` -> `driftline run` through the real broker: the service starts from the
pretrained model (transfer from a source domain) instead of from nothing."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from driftline.core import Event
from driftline.learners.checkpoint import read_model_file
from driftline.learners.factory import build_learner
from driftline.settings import ModelSettings
from driftline.stream.sources import from_generator
from tests.helpers import ServiceProcess, produce_events, read_topic, wait_for, write_config
from tests.integration.test_cli import _cli

pytestmark = [pytest.mark.integration]


def _run_to_end(cfg: Path, log: Path, n: int) -> None:
    svc = ServiceProcess(cfg, log)
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= n, 180, f"{n} consumed")
    finally:
        assert svc.terminate() == 0, svc.log()


def _accuracy(preds: list[dict[str, Any]], labels: dict[str, Any]) -> float:
    return sum(p["prediction"] == labels[p["id"]] for p in preds) / len(preds)


@pytest.mark.usefixtures("kafka_client")  # on both Kafka client libraries
def test_pretrain_on_a_topic_range_then_run_starts_from_it(kafka_bootstrap: str, topic_prefix: str,
                                                           tmp_path: Path) -> None:
    model = {"name": "HoeffdingTreeClassifier", "classes": [0, 1]}
    source_topic = f"{topic_prefix}-source"
    source = list(itertools.islice(from_generator("Agrawal", params={"classification_function": 0}, seed=1,
                                                  id_prefix="s-"), 5000))
    produce_events(kafka_bootstrap, source_topic, source)
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=model)
    out = _cli("pretrain", "--config", str(cfg), "--topic", source_topic, "--from-offset", "1000",
               "--to-offset", "4000", "--output", str(tmp_path / "source.dlm"), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"pretrained on kafka:{source_topic}[1000..4000): 3000 labeled events" in out.stderr
    meta, state = read_model_file(tmp_path / "source.dlm")
    assert meta["learned"] == 3000 and meta["model"] == "HoeffdingTreeClassifier" and state["updates"] == 3000
    assert meta["accuracy"] > 0.85

    # target stream: same concept, unseen events
    target = list(itertools.islice(from_generator("Agrawal", params={"classification_function": 0}, seed=2,
                                                  id_prefix="t-"), 300))
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", target)
    run_cfg = write_config(tmp_path / "run.yaml", kafka_bootstrap, topic_prefix,
                           model={**model, "start_from": str(tmp_path / "source.dlm")})
    _run_to_end(run_cfg, tmp_path / "svc.log", len(target))
    preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
    assert len(preds) == 300
    assert preds[0]["model_updates"] == 3000  # the very first prediction comes from the pretrained model
    labels = {e["id"]: e["label"] for e in target}
    pretrained_acc = _accuracy(preds[:200], labels)
    scratch = build_learner(ModelSettings(**model))  # type: ignore[arg-type]
    scratch_hits = 0
    for e in map(Event.model_validate, target[:200]):
        scratch_hits += scratch.predict_one(e).value == e.label
        scratch.learn_one(e, e.label)  # type: ignore[arg-type]
    assert pretrained_acc > 0.9 and pretrained_acc > scratch_hits / 200 + 0.1, (pretrained_acc, scratch_hits)


def test_start_from_that_does_not_fit_fails_at_startup(kafka_bootstrap: str, topic_prefix: str,
                                                       tmp_path: Path) -> None:
    data = tmp_path / "src.csv"
    data.write_text("a,label\n" + "".join(f"{i % 7},{i % 2}\n" for i in range(50)))
    out = _cli("pretrain", "--file", str(data), "--output", str(tmp_path / "nb.dlm"), "--no-progress",
               "--config", str(write_config(tmp_path / "nb.yaml", kafka_bootstrap, topic_prefix,
                                            model={"name": "GaussianNB"})))
    assert out.returncode == 0, out.stderr
    wrong = write_config(tmp_path / "lr.yaml", kafka_bootstrap, topic_prefix,
                         model={"name": "HoeffdingTreeClassifier", "start_from": str(tmp_path / "nb.dlm")})
    out = _cli("run", "--config", str(wrong), timeout=60)
    assert out.returncode == 2
    assert "model.start_from" in out.stderr and "nb.dlm" in out.stderr and "does not fit" in out.stderr
    missing = write_config(tmp_path / "m.yaml", kafka_bootstrap, topic_prefix,
                           model={"name": "GaussianNB", "start_from": str(tmp_path / "nope.dlm")})
    out = _cli("run", "--config", str(missing), timeout=60)
    assert out.returncode == 2 and "nope.dlm" in out.stderr and "cannot read" in out.stderr
    out = _cli("pretrain", "--generator", "SEA", "--output", str(tmp_path / "x.dlm"))
    assert out.returncode == 2 and "--limit" in out.stderr


TOPICS = {
    "sport": "goalie puck hockey season playoff coach team scored league match striker referee stadium",
    "space": "orbit shuttle launch nasa rocket satellite moon astronaut telescope planet mission booster",
    "computers": "graphics card driver windows memory cpu software monitor keyboard disk compiler screen",
    "politics": "senate bill vote election president congress law tax policy governor campaign court",
}


def _docs(n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    filler = ["the", "a", "of", "and", "to", "in", "is", "that", "it", "was", "for", "on", "with", "as", "this", "by"]
    out = []
    for i in range(n):
        topic = rng.choice(sorted(TOPICS))
        words = rng.sample(TOPICS[topic].split(), 4) + rng.sample(filler, 6)
        rng.shuffle(words)
        out.append({"id": f"{prefix}{i}", "text": " ".join(words), "label": topic})
    return out


@pytest.mark.slow
def test_text_round_trip_with_the_minilm_backbone(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    model = {"name": "SoftmaxRegression", "backbone": {"kind": "sentence-transformers", "device": "cpu"}}
    src = tmp_path / "source.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in _docs(400, seed=1, prefix="s-")))
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=model)
    out = _cli("pretrain", "--config", str(cfg), "--file", str(src), "--output", str(tmp_path / "text.dlm"),
               "--no-progress", timeout=300)
    assert out.returncode == 0, out.stderr
    meta, _ = read_model_file(tmp_path / "text.dlm")
    assert meta["learned"] == 400 and meta["backbone"] == "sentence-transformers"

    target = _docs(200, seed=2, prefix="t-")
    # a features-only event and a text event without a label go through too
    produce_events(kafka_bootstrap, f"{topic_prefix}-in",
                   [*target, {"id": "f-1", "features": {"x": 1.0}, "label": "space"}])
    run_cfg = write_config(tmp_path / "run.yaml", kafka_bootstrap, topic_prefix,
                           model={**model, "start_from": str(tmp_path / "text.dlm")})
    _run_to_end(run_cfg, tmp_path / "svc.log", len(target) + 1)
    preds = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred")]
    assert len(preds) == 200 and preds[0]["model_updates"] == 400
    assert _accuracy(preds[:100], {d["id"]: d["label"] for d in target}) > 0.9
    dead = read_topic(kafka_bootstrap, f"{topic_prefix}-dlq")
    assert len(dead) == 1 and dict(dead[0].headers)["driftline.reason"] == b"input_kind_mismatch"
