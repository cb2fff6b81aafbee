"""Replay: simulated label delay, determinism, and the public `driftline.testing.replay` helper."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from driftline.errors import ConfigError
from driftline.stream.replay import LABELS_TOPIC, LabelDelay, simulate
from driftline.stream.sources import from_generator
from driftline.testing import replay


def _events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    out = []
    for e in itertools.islice(from_generator("SEA", seed=seed, id_prefix="e"), n):
        e.pop("timestamp")
        out.append(e)
    return out


def test_label_delay_specs() -> None:
    assert LabelDelay.parse("none").kind == "none" and LabelDelay.parse(None).kind == "none"
    assert LabelDelay.parse("30") == LabelDelay("fixed", 30.0, 30.0)
    assert LabelDelay.parse("random:5:60") == LabelDelay("random", 5.0, 60.0)
    for bad in ("-1", "random:9:1", "soon", "random:x:2"):
        with pytest.raises(ConfigError, match="--label-delay"):
            LabelDelay.parse(bad)


def test_simulated_labels_come_later_in_event_time_order() -> None:
    recs = list(simulate(_events(50), LabelDelay.parse("10.5"), seed=0, interval_ms=1000))
    times = [r.timestamp_ms for r in recs]
    assert times == sorted(times)
    events = {json.loads(r.value)["id"]: r.timestamp_ms for r in recs if r.topic != LABELS_TOPIC}
    labels = {json.loads(r.value)["id"]: r.timestamp_ms for r in recs if r.topic == LABELS_TOPIC}
    assert set(events) == set(labels) and len(events) == 50
    assert all(labels[k] - events[k] == 10_500 for k in events)
    assert all("label" not in json.loads(r.value) for r in recs if r.topic != LABELS_TOPIC)


def test_replay_is_deterministic_for_a_seed() -> None:
    events = _events(2000)
    a = replay(None, events, label_delay="random:1:300", seed=7)
    b = replay(None, events, label_delay="random:1:300", seed=7)
    c = replay(None, events, label_delay="random:1:300", seed=8)
    assert a.deterministic() == b.deterministic()
    assert a.label_delays_s != c.label_delays_s and a.cumulative != c.cumulative
    assert a.learned == 2000 and a.predicted == 2000 and a.cumulative is not None and a.cumulative > 0.8


def test_delayed_labels_score_predictions_made_before_them() -> None:
    """With labels 5 minutes late (300 events at 1 s apart) the model is always 300 labels behind,
    so its prequential accuracy is at most that of labels on the events themselves."""
    events = _events(3000)
    now = replay(None, events)
    late = replay(None, events, label_delay="300", seed=0)
    assert now.learned == late.learned == 3000
    assert late.cumulative is not None and now.cumulative is not None
    assert late.cumulative < now.cumulative
    assert late.ledger_digest == now.ledger_digest  # the same events learned, in another order


def test_invalid_events_are_dead_lettered_and_counted(tmp_path: Path) -> None:
    events: list[Any] = [*_events(10), {"id": "bad", "features": {"x": [1]}}, {"features": {"x": 1.0}}]
    s = replay({"model": {"name": "GaussianNB"}}, events, report_dir=tmp_path / "r")
    assert s.dead_lettered == {"missing_id": 1, "wrong_type": 1} and s.learned == 10
    assert {p.name for p in (tmp_path / "r").iterdir()} == {"index.html", "summary.json", "rolling.png",
                                                            "latency.png", "label_delay.png"}
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["dead_lettered"] == s.dead_lettered


def test_labels_that_never_come_expire(tmp_path: Path) -> None:
    events = _events(500)
    s = replay({"labels": {"ttl_seconds": 60}}, events, label_delay="random:0:120", seed=3)
    assert 0 < s.labels_expired < 500
    assert s.learned + s.labels_expired == 500
    assert s.dead_lettered.get("label_expired", 0) == s.labels_expired  # their late labels


def _stagger_drift_at_3000() -> list[dict[str, Any]]:
    """6,000 STAGGER events, concept 0 then 2 from event 3,000, without timestamps (1 s apart in replay)."""
    events = []
    for e in itertools.islice(from_generator("STAGGER", params={"classification_function": 0}, seed=1, drift_at=3000,
                                             drift_params={"classification_function": 2}, id_prefix="s"), 6000):
        e.pop("timestamp")
        events.append(e)
    return events


def test_detections_are_in_the_summary_and_marked_on_the_plot(tmp_path: Path) -> None:
    events = _stagger_drift_at_3000()
    cfg = {"model": {"name": "HoeffdingTreeClassifier"}, "drift": {"detectors": [{"name": "HDDM_W"}]}}
    plain = replay({"model": cfg["model"]}, events)
    s = replay(cfg, events, report_dir=tmp_path)
    drifts = [n for n, det, level in s.detections if level == "drift"]
    assert {det for _, det, _ in s.detections} == {"HDDM_W"}
    assert any(3000 < n <= 3250 for n in drifts), s.detections
    assert plain.detections == [] and plain.cumulative == s.cumulative  # detection alone changes nothing
    assert json.loads((tmp_path / "summary.json").read_text())["detections"]


def test_speed_compresses_event_time_and_progress_shows(capsys: pytest.CaptureFixture[str]) -> None:
    """100 events 1 s apart in event time, replayed 200x faster than real time: at least ~0.5 s of wall time
    (a lower bound only: without --speed the same replay takes milliseconds)."""
    from driftline.learners.factory import build_learner
    from driftline.settings import load_settings
    from driftline.stream.replay import replay as run_replay

    settings = load_settings(None)
    records = list(simulate(_events(100), LabelDelay(), seed=0, interval_ms=1000))
    s = run_replay(settings, build_learner(settings.model), records, label_delay=LabelDelay(), seed=0,
                   batch_size=10, speed=200.0, total=100, progress=True)
    assert s.wall_s >= 0.45 and s.predicted == 100
    assert "replay" in capsys.readouterr().err  # the progress bar, on stderr


def test_policies_run_in_replay_and_adaptations_are_marked_on_the_plot(tmp_path: Path) -> None:
    import matplotlib.image

    events = _stagger_drift_at_3000()
    model = {"name": "HoeffdingTreeClassifier"}
    detect = {"detectors": [{"name": "ADWIN"}]}
    plain = replay({"model": model, "drift": detect}, events, report_dir=tmp_path / "plain")
    s = replay({"model": model, "drift": {**detect, "policies": [{"name": "reset"}]}}, events, report_dir=tmp_path)
    assert plain.adaptations == []
    acts = [(n, a) for n, a, _ in s.adaptations]
    assert acts and acts[0][1] == "reset" and 3000 < acts[0][0] <= 3250, s.adaptations
    assert s.model_version > 1 and s.cumulative is not None and plain.cumulative is not None
    assert s.cumulative > plain.cumulative  # the policy ran: the model recovered faster
    assert json.loads((tmp_path / "summary.json").read_text())["adaptations"][0][1] == "reset"
    assert "Drift, adaptation and promotions" in (tmp_path / "index.html").read_text()

    def green(path: Path) -> int:  # pixels of the adaptation marker colour (#2ca02c)
        img = matplotlib.image.imread(str(path))[..., :3]
        return int((abs(img - [0x2C / 255, 0xA0 / 255, 0x2C / 255]).max(axis=-1) < 0.05).sum())

    assert green(tmp_path / "rolling.png") > 20 and green(tmp_path / "plain" / "rolling.png") == 0


def test_champion_and_challengers_in_replay_report_each_model_and_the_promotions(tmp_path: Path) -> None:
    import matplotlib.image

    events = _stagger_drift_at_3000()
    cfg = {"models": {"prior": {"name": "dummy.PriorClassifier"}, "tree": {"name": "HoeffdingTreeClassifier"}},
           "promotion": {"schedule": "window", "window": 500}}
    s = replay(cfg, events, report_dir=tmp_path)
    alone = replay({"model": {"name": "HoeffdingTreeClassifier"}}, events)
    assert set(s.models) == {"prior", "tree"} and s.models["tree"]["cumulative"] == alone.cumulative
    assert s.promotions and s.promotions[0][1:] == ("prior", "tree", "test") and s.model == "tree"
    assert s.cumulative is not None and s.models["prior"]["cumulative"] is not None
    assert s.models["prior"]["cumulative"] < s.cumulative <= s.models["tree"]["cumulative"]  # type: ignore[operator]
    assert set(s.model_rolling) == {"prior", "tree"}
    assert json.loads((tmp_path / "summary.json").read_text())["promotions"][0][2] == "tree"
    assert "prior -&gt; tree (test)" in (tmp_path / "index.html").read_text()
    img = matplotlib.image.imread(str(tmp_path / "rolling.png"))[..., :3]
    purple = int((abs(img - [0x94 / 255, 0x67 / 255, 0xBD / 255]).max(axis=-1) < 0.05).sum())
    assert purple > 20  # the promotion line
