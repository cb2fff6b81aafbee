"""Write deploy/grafana/dashboards/*.json from driftline.monitoring.dashboards (run after changing it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from driftline.monitoring.dashboards import DASHBOARDS, build

OUT = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards"


def render() -> dict[str, str]:
    return {f"{d.uid}.json": json.dumps(build(d), indent=2, sort_keys=True) + "\n" for d in DASHBOARDS}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}", file=sys.stderr)
