"""Champion and challengers on a real broker: `driftline run` with two models, the weaker one serving first. The
better challenger is promoted by the race; the audit topic names the event that completed the evidence, and
served predictions switch model name right after it in its partition; challengers' predictions go to the
shadow topic; a restarted service keeps the champion it had; an authenticated POST /promote changes it by hand."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServiceProcess, post_promote, produce_events, read_topic, wait_for, write_config

pytestmark = [pytest.mark.integration]

TOKEN = "challengers-test-token"


def _events(n: int, start: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
        out.append({"id": f"e{i}", "features": {"x": x, "y": y}, "label": bool(x > y)})
    return out


def _run(cfg: Path, log: Path, consumed: int, between: Callable[[ServiceProcess], None] | None = None
         ) -> dict[str, float]:
    svc = ServiceProcess(cfg, log)
    try:
        svc.wait_ready()
        if between is not None:
            between(svc)
        wait_for(lambda: svc.metric('driftline_events_total{outcome="consumed"}') >= consumed, 180,
                 f"{consumed} consumed")
        metrics = svc.metrics()
    finally:
        assert svc.terminate() == 0, svc.log()
    return metrics


def _post(port: int, body: dict[str, Any], token: str | None) -> tuple[int, str]:
    return post_promote(port, json.dumps(body).encode(), token)


def test_a_better_challenger_is_promoted_on_a_real_broker_and_a_restart_keeps_it(
        kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> None:
    p = topic_prefix
    cfg = write_config(
        tmp_path / "c.yaml", kafka_bootstrap, p,
        models={"prior": {"name": "dummy.PriorClassifier", "serving": True}, "logreg": {"name": "LogisticRegression"}},
        promotion={"schedule": "window", "window": 200, "min_events": 200, "cooldown": 200},
        topics={"audit": f"{p}-audit", "shadow": f"{p}-shadow"},
        checkpoint={"directory": str(tmp_path / "ckpt"), "every_seconds": 1},
        metrics={"auth": {"kind": "bearer", "token": TOKEN}})
    produce_events(kafka_bootstrap, f"{p}-in", _events(1200, 0, seed=1))
    first = _run(cfg, tmp_path / "a.log", 1200)
    assert first['driftline_model_serving{model="logreg"}'] == 1
    assert first['driftline_model_serving{model="prior"}'] == 0
    assert first['driftline_promotions_total{model="logreg",reason="test"}'] == 1

    audit = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{p}-audit")]
    promotions = [a for a in audit if a["type"] == "promotion"]
    assert len(promotions) == 1, audit
    promo = promotions[0]
    assert (promo["from"], promo["to"], promo["test"]) == ("prior", "logreg", "mcnemar_exact")
    assert promo["p_value"] < promo["alpha"] and promo["error_to"] < promo["error_from"]
    part, offset = promo["source"]["partition"], promo["source"]["offset"]
    served = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{p}-pred")]
    assert len({s["id"] for s in served}) == 1200
    mine = [s for s in served if s["source"]["partition"] == part]
    assert {s["model"] for s in mine if s["source"]["offset"] <= offset} == {"prior"}
    assert {s["model"] for s in mine if s["source"]["offset"] > offset} == {"logreg"}
    shadow = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{p}-shadow")]
    assert len(shadow) == 1200
    by_id = {s["id"]: s["model"] for s in served}
    assert all(s["model"] != by_id[s["id"]] for s in shadow)  # each event: served by one, shadowed by the other

    produce_events(kafka_bootstrap, f"{p}-in", _events(300, 1200, seed=2))
    second = _run(cfg, tmp_path / "b.log", 300)  # a new process resumes from the checkpoint
    assert second['driftline_model_serving{model="logreg"}'] == 1
    later = {json.loads(r.value)["id"]: json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{p}-pred")}
    new = [later[f"e{i}"] for i in range(1200, 1500)]
    assert {s["model"] for s in new} == {"logreg"}
    assert min(s["model_updates"] for s in new) >= 1200  # the restored challenger-turned-champion, not a fresh one

    # a manual promotion over HTTP (with the metrics server's authentication only): the prior serves again
    def promote(svc: ServiceProcess) -> None:
        assert _post(svc.port, {"model": "prior"}, None)[0] == 401
        code, message = _post(svc.port, {"model": "nope"}, TOKEN)
        assert code == 404 and "no model named 'nope'; the models are logreg, prior" in message
        assert _post(svc.port, {"model": "prior"}, TOKEN)[0] == 202
        produce_events(kafka_bootstrap, f"{p}-in", _events(100, 1500, seed=3))

    third = _run(cfg, tmp_path / "c.log", 100, between=promote)
    assert third['driftline_promotions_total{model="prior",reason="manual"}'] == 1
    assert third['driftline_model_serving{model="prior"}'] == 1
    final = {json.loads(r.value)["id"]: json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{p}-pred")}
    assert {final[f"e{i}"]["model"] for i in range(1500, 1600)} == {"prior"}
    manual = [json.loads(r.value) for r in read_topic(kafka_bootstrap, f"{p}-audit")]
    manual = [a for a in manual if a["type"] == "promotion" and a["reason"] == "manual"]
    assert [(a["from"], a["to"], a["by"]) for a in manual] == [("logreg", "prior", "http")]
