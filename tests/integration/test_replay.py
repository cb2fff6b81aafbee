"""`driftline replay` from the command line: a topic range through the real broker, the report files,
and the report rendered by a real headless Chromium (its plots must show)."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from driftline.stream.sources import from_generator
from tests.helpers import produce_events, write_config
from tests.integration.test_cli import _cli

pytestmark = [pytest.mark.integration]


def _non_blank(png: Path) -> float:
    """Fraction of pixels that are not (near) white."""
    img = image.imread(str(png))[..., :3]
    return float((img.mean(axis=2) < 0.95).mean())


@pytest.mark.usefixtures("kafka_client")  # on both Kafka client libraries
def test_replay_a_topic_range_with_delayed_labels_and_render_the_report(kafka_bootstrap: str, topic_prefix: str,
                                                                        tmp_path: Path) -> None:
    topic = f"{topic_prefix}-recorded"
    events = list(itertools.islice(from_generator("Agrawal", params={"classification_function": 0}, seed=4,
                                                  id_prefix="r-"), 2000))
    for e in events:
        e.pop("timestamp")
    produce_events(kafka_bootstrap, topic, events)
    cfg = write_config(tmp_path / "c.yaml", kafka_bootstrap, topic_prefix,
                       model={"name": "HoeffdingTreeClassifier", "classes": [0, 1]})
    runs = []
    for n in (1, 2):
        out = _cli("replay", "--config", str(cfg), "--topic", topic, "--to-offset", "1500", "--label-delay",
                   "random:10:120", "--seed", "5", "--report", str(tmp_path / f"report{n}"), "--no-progress")
        assert out.returncode == 0, out.stderr
        assert f"replayed kafka:{topic}[0..1500): 1500 events, 1500 predicted, 1500 learned" in out.stderr
        runs.append(json.loads((tmp_path / f"report{n}" / "summary.json").read_text()))
    for r in runs:
        for k in ("wall_s", "events_per_s", "predict_ms_p50", "predict_ms_p99"):
            r.pop(k)
    assert runs[0] == runs[1]  # same seed, same summary
    labels = [e["label"] for e in events[:1500]]
    majority = max(labels.count(0), labels.count(1)) / 1500
    assert runs[0]["cumulative"] > majority and runs[0]["label_delay"] == "random 10-120s"

    report = tmp_path / "report1"
    page = (report / "index.html").read_text()
    for plot in ("rolling.png", "latency.png", "label_delay.png"):
        assert f'src="{plot}"' in page
        assert _non_blank(report / plot) > 0.02, plot
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Debian's chromium is needed (scripts/system-deps.sh installs it)"
    shot = tmp_path / "shot.png"
    # --virtual-time-budget: the screenshot waits until the page settled (images decoded and painted); without
    # it a loaded CI machine once got a shot of the page before its plots were painted
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--virtual-time-budget=5000", "--run-all-compositor-stages-before-draw",
                    f"--screenshot={shot}", "--window-size=1000,1600", (report / "index.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = image.imread(str(shot))[..., :3]
    assert pixels.shape[:2] == (1600, 1000)
    # the plots are rendered: a good share of coloured (not grey-scale) pixels: lines, bars
    colour = np.abs(pixels[..., 0] - pixels[..., 2]) > 0.2
    assert colour.mean() > 0.005, f"screenshot shows almost no plot colour ({colour.mean():.4f})"
