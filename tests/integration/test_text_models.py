"""Text without a backbone on a real broker: River's bag of words in front of a River estimator named by its path
inside river (naive_bayes.MultinomialNB), served by `driftline run`, checkpointed and resumed, and replayed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftline.testing import newsgroups
from tests.helpers import ServiceProcess, produce_events, read_topic, wait_for, write_config
from tests.integration.test_cli import _cli

pytestmark = [pytest.mark.integration]

CATEGORIES = ["rec.sport.hockey", "sci.space", "talk.politics.guns", "comp.graphics"]
MODEL = {"name": "naive_bayes.MultinomialNB", "params": {"alpha": 0.1}, "text_features": {"kind": "BagOfWords"}}


def _run(cfg: Path, log: Path, consumed: int) -> None:
    svc = ServiceProcess(cfg, log)
    try:
        svc.wait_ready()
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= consumed, 180,
                 f"{consumed} consumed")
    finally:
        assert svc.terminate() == 0, svc.log()


def test_bag_of_words_naive_bayes_serves_a_text_stream_and_resumes_from_its_checkpoint(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    docs = newsgroups(categories=CATEGORIES, seed=1)[:800]
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix, model=MODEL,
                       checkpoint={"directory": str(tmp_path / "ckpt"), "every_seconds": 1})
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", docs[:500])
    _run(cfg, tmp_path / "a.log", 500)
    produce_events(kafka_bootstrap, f"{topic_prefix}-in", docs[500:])
    _run(cfg, tmp_path / "b.log", 300)  # a new process: it resumes from the checkpoint and its offsets
    preds = {}
    for r in read_topic(kafka_bootstrap, f"{topic_prefix}-pred"):
        p = json.loads(r.value)
        preds[p["id"]] = p
    assert len(preds) == 800
    labels = {d["id"]: d["label"] for d in docs}
    second = [p for p in preds.values() if p["id"] in {d["id"] for d in docs[500:]}]
    assert min(p["model_updates"] for p in second) >= 500  # the resumed model, not a fresh one
    accuracy = sum(p["prediction"] == labels[p["id"]] for p in second) / len(second)
    assert accuracy > 0.85, accuracy
    assert set(second[0]["proba"]) == set(CATEGORIES)

    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = _cli("replay", "--config", str(cfg), "--file", str(src), "--summary", str(tmp_path / "s.json"),
               "--no-progress")
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["learned"] == 800 and summary["model"] == "naive_bayes.MultinomialNB"
    assert summary["cumulative"] > 0.8
