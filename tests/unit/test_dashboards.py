"""The shipped Grafana JSON is what driftline.monitoring.dashboards generates, and its queries are sane."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from driftline.monitoring.dashboards import DASHBOARDS, build
from driftline.monitoring.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]


def _render() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("gen_dashboards", ROOT / "scripts" / "gen_dashboards.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.render()  # type: ignore[no-any-return]


def test_shipped_dashboards_are_generated_from_code() -> None:
    shipped = {p.name: p.read_text() for p in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert shipped == _render(), "run: python scripts/gen_dashboards.py"


def test_every_panel_queries_metrics_the_service_exports_and_uses_the_template_variables() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    ServiceMetrics(registry, model="m", task="classification")
    exported = {m.name for m in registry.collect()} | {"process_cpu_seconds", "process_resident_memory_bytes", "up"}
    for d in DASHBOARDS:
        model = build(d)
        assert [v["name"] for v in model["templating"]["list"]] == ["datasource", "instance", "model"]
        for panel in d.panels:
            for expr, _ in panel.targets:
                assert '$instance' in expr, (d.title, panel.title)
                for name in re.findall(r"\b(driftline_[a-z_]+|process_[a-z_]+)", expr):
                    base = re.sub(r"_(bucket|total|count|sum)$", "", name)
                    assert base in exported or name in exported, (panel.title, name)
    assert json.loads(_render()["driftline-quality.json"])["annotations"]["list"][1]["name"] == "drift detections"
