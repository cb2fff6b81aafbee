"""The replay report: PNG plots and one self-contained HTML page that shows them, plus summary.json.

The page has no external resources (no CDN, no scripts): it opens offline, next to its plots.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from driftline.stream.replay import Summary

PLOTS = ("rolling.png", "latency.png", "label_delay.png")


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=100)
    return plt, fig, ax


def _rolling(summary: Summary, path: Path) -> None:
    plt, fig, ax = _figure()
    if summary.rolling:
        xs, ys = zip(*summary.rolling, strict=True)
        served = "served (the champion's)" if summary.model_rolling else summary.metric
        ax.plot(xs, ys, color="#1f77b4", linewidth=1.6 if not summary.model_rolling else 2.4,
                label=f"rolling {served}")
        for name, series in summary.model_rolling.items():  # champion and challengers: one curve per model
            if series:
                mx, my = zip(*series, strict=True)
                ax.plot(mx, my, linewidth=1.0, alpha=0.8, label=name)
        for i, (n, _, to, reason) in enumerate(summary.promotions):
            ax.axvline(n, linestyle="-.", color="#9467bd", linewidth=1.0,
                       label=f"promotion ({len(summary.promotions)})" if i == 0 else None)
            ax.annotate(f"{to}{' (manual)' if reason == 'manual' else ''}", (n, 1.0),
                        xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right", fontsize=7,
                        color="#9467bd")
        for level, style, color in (("drift", "--", "#d62728"), ("warning", ":", "#ff7f0e")):
            marks = sorted({n for n, _, lv in summary.detections if lv == level})
            for i, n in enumerate(marks):
                ax.axvline(n, linestyle=style, color=color, linewidth=1.0,
                           label=f"{level} detected ({len(marks)})" if i == 0 else None)
        # adaptations: a marker on the curve where the ladder acted (rollbacks apart)
        lo, hi = ax.get_ylim()
        adapted = [(n, a) for n, a, _ in summary.adaptations if a not in ("rollback", "none")]
        names = ", ".join(sorted({a for _, a in adapted}))
        rolled = [n for n, a, _ in summary.adaptations if a == "rollback"]
        for acts, marker, color, label in (([n for n, _ in adapted], "^", "#2ca02c", f"adaptation: {names}"),
                                           (rolled, "v", "#9467bd", "rollback")):
            if acts:
                ax.scatter(acts, [lo + 0.04 * (hi - lo)] * len(acts), marker=marker, s=60, color=color,
                           zorder=3, label=f"{label} ({len(acts)})")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no labeled events", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("labeled events")
    ax.set_ylabel(summary.metric)
    ax.set_title(f"Rolling {summary.metric} over the stream ({summary.model})")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _hist(values: list[float], path: Path, title: str, xlabel: str, color: str) -> None:
    plt, fig, ax = _figure()
    if values:
        ordered = sorted(values)
        top = ordered[min(len(ordered) - 1, int(len(ordered) * 0.995))] or ordered[-1] or 1.0
        ax.hist(values, bins=50, range=(0.0, top), color=color)  # the last 0.5% (outliers) off the scale
    else:
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("events")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(summary: Summary, directory: str | Path) -> Path:
    """Write the plots, summary.json and index.html into ``directory``; returns the HTML path."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    _rolling(summary, out / PLOTS[0])
    _hist(summary.predict_ms, out / PLOTS[1], "Predict latency per event", "milliseconds", "#2ca02c")
    _hist(summary.label_delays_s, out / PLOTS[2], f"Label delay ({summary.label_delay})", "seconds", "#ff7f0e")
    data = summary.to_json()
    (out / "summary.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in data.items())
    figures = "\n".join(f'<figure><img src="{p}" alt="{p[:-4]}"></figure>' for p in PLOTS)
    timeline = sorted([(n, "detection", f"{det} {level}") for n, det, level in summary.detections] +
                      [(n, "adaptation", f"{action} (after {det or '-'})") for n, action, det in summary.adaptations] +
                      [(n, "promotion", f"{frm} -> {to} ({reason})") for n, frm, to, reason in summary.promotions])
    events = "\n".join(f"<tr><td>{n}</td><td>{kind}</td><td>{html.escape(what)}</td></tr>"
                        for n, kind, what in timeline[:500])
    timeline_html = (f"<h2>Drift, adaptation and promotions</h2>\n<table><tr><th>labeled events</th><th>kind</th>"
                     f"<th>what</th></tr>\n{events}\n</table>" if timeline else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>driftline replay: {html.escape(summary.model)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: left; }}
th {{ background: #f4f4f4; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head>
<body>
<h1>driftline replay report</h1>
<table>
{rows}
</table>
{figures}
{timeline_html}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {x}" for k, x in v.items()) or "none"
    return str(v)
