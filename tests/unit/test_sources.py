from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from river.datasets import synth

from driftline.core import Event
from driftline.errors import ConfigError
from driftline.stream.sources import bundled_datasets, from_dataset, from_file, from_generator


def test_generator_events_validate_and_are_seeded() -> None:
    a = list(itertools.islice(from_generator("SEA", seed=7, id_prefix="s-"), 50))
    b = list(itertools.islice(from_generator("SEA", seed=7, id_prefix="s-"), 50))
    assert [e["features"] for e in a] == [e["features"] for e in b]
    for e in a:
        Event.model_validate(e)
    assert a[0]["id"] == "s-0" and a[49]["id"] == "s-49"


def test_drift_point_switches_concept_exactly() -> None:
    events = list(itertools.islice(from_generator(
        "Agrawal", params={"classification_function": 0}, drift_at=100,
        drift_params={"classification_function": 4}, seed=1, id_prefix=""), 200))
    before = list(itertools.islice(synth.Agrawal(classification_function=0, seed=1), 100))
    after = list(itertools.islice(synth.Agrawal(classification_function=4, seed=2), 100))
    assert [e["label"] for e in events[:100]] == [y for _, y in before]
    assert [e["label"] for e in events[100:]] == [y for _, y in after]


def test_bundled_datasets_exclude_downloads() -> None:
    names = bundled_datasets()
    assert "Phishing" in names and "TrumpApproval" in names
    assert "Elec2" not in names  # a RemoteDataset needs the network
    first = next(from_dataset("Phishing", id_prefix="p-"))
    assert isinstance(first["label"], bool) and first["features"]
    with pytest.raises(ConfigError, match="Phishing"):
        from_dataset("Elec2", id_prefix="")


def test_unknown_generator_and_params() -> None:
    with pytest.raises(ConfigError, match="Agrawal"):
        from_generator("Nope", id_prefix="")
    with pytest.raises(ConfigError, match="bogus"):
        from_generator("SEA", params={"bogus": 1}, id_prefix="")


def test_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("id,a,b,label\nx1,1.5,fr,yes\nx2,2,,no\n")
    rows = list(from_file(csv_path, id_prefix="c-"))
    assert rows[0] == {"id": "x1", "features": {"a": 1.5, "b": "fr"}, "label": "yes"}
    assert rows[1] == {"id": "x2", "features": {"a": 2}, "label": "no"}
    jl = tmp_path / "d.jsonl"
    jl.write_text(json.dumps({"id": "j1", "features": {"a": 1}}) + "\n\n" + '{"id": 5}\n')
    it = from_file(jl, id_prefix="")
    assert next(it)["id"] == "j1"
    with pytest.raises(ConfigError, match=r"d.jsonl:3"):
        next(it)
