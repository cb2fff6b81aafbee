"""`pip install driftline` without extras: River heads on tabular and text streams run without torch, and a
config that needs the deep extra fails at start naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from driftline.testing import newsgroups

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def river_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("river-only") / "venv"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=300)
    subprocess.run([*uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), str(ROOT)], check=True,
                   timeout=900)
    return venv / "bin"


def test_the_river_only_install_has_no_torch_and_runs_tabular_and_text_streams(river_only: Path,
                                                                                tmp_path: Path) -> None:
    absent = subprocess.run([river_only / "python", "-c", "import importlib.util as u; print([m for m in "
                             "('torch', 'torchvision', 'avalanche', 'sentence_transformers') if u.find_spec(m)])"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)  # not the source tree
    assert absent.stdout.strip() == "[]", absent.stderr
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in newsgroups(categories=["sci.space", "rec.sport.hockey"],
                                                                      seed=2)[:400]))
    text_cfg = tmp_path / "text.yaml"
    text_cfg.write_text("model: {name: naive_bayes.MultinomialNB, text_features: {kind: BagOfWords}}\n")
    for args, summary in ((["--config", str(text_cfg), "--file", str(docs)], tmp_path / "text.json"),
                          (["--generator", "Agrawal", "--limit", "2000"], tmp_path / "tabular.json")):
        out = subprocess.run([river_only / "driftline", "replay", *args, "--no-progress", "--summary", str(summary)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        result = json.loads(summary.read_text())
        assert result["learned"] == result["events"] and result["dead_lettered"] == {}
        assert result["cumulative"] > (0.9 if "text" in summary.name else 0.6)


def test_a_deep_model_on_the_river_only_install_names_the_extra(river_only: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "deep.yaml"
    cfg.write_text("model: {name: SoftmaxRegression, backbone: {kind: sentence-transformers}}\n")
    out = subprocess.run([river_only / "driftline", "replay", "--config", str(cfg), "--generator", "Agrawal",
                          "--limit", "10", "--no-progress"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 2
    assert ("model.backbone.kind sentence-transformers needs torch, sentence_transformers, which this install "
            "lacks: pip install 'driftline[deep]'") in out.stderr
