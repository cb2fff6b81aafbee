"""A small live page at ``/``: the rolling prequential metric over labeled events with drift detections and
adaptations marked, events/s and consumer lag; no external assets, no Grafana needed.

`LiveSampler` samples the service's `LiveStatus` once a second on its own thread (the run loop is not touched)
into a bounded series; ``/live.json`` serves the series and the markers, and the page (inline SVG and
JavaScript) polls it.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LiveStatus:
    """What the service reports at one moment."""

    learned: int
    rolling: float | None  # the rolling prequential metric (accuracy, or MAE for regression)
    metric: str
    consumed: int
    lag: float | None
    model: str
    detections: Sequence[tuple[int, str, str]] = field(default_factory=tuple)  # (labeled, detector, level)
    adaptations: Sequence[tuple[int, str]] = field(default_factory=tuple)  # (labeled, action)


class LiveSampler:
    """Once a second: a point (time, labeled events, rolling metric, events/s, lag), the last ``keep`` kept."""

    def __init__(self, status: Callable[[], LiveStatus], *, interval_s: float = 1.0, keep: int = 3600) -> None:
        self._status = status
        self.interval_s = interval_s
        self.points: deque[tuple[float, int, float | None, float, float | None]] = deque(maxlen=keep)
        self._last: tuple[float, int] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="driftline-live", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(Exception):  # a page is never worth a crash
                self.sample()

    def sample(self) -> LiveStatus:
        s = self._status()
        now = time.time()
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = (s.consumed - self._last[1]) / (now - self._last[0])
        self._last = (now, s.consumed)
        self.points.append((now, s.learned, s.rolling, rate, s.lag))
        return s

    def snapshot(self) -> dict[str, Any]:
        s = self._status()
        points = list(self.points)
        latest = points[-1] if points else None
        return {
            "model": s.model, "metric": s.metric, "learned": s.learned, "rolling": s.rolling,
            "events_per_s": latest[3] if latest else 0.0, "lag": s.lag,
            "series": [[p[1], p[2]] for p in points if p[2] is not None],
            "detections": [list(d) for d in s.detections],
            "adaptations": [list(a) for a in s.adaptations],
        }

    def json(self) -> bytes:
        return json.dumps(self.snapshot(), allow_nan=False, default=str).encode()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>driftline live</title>
<style>
 body{font:14px system-ui,sans-serif;margin:24px;color:#222}
 .stats span{display:inline-block;margin-right:28px} .stats b{font-size:20px}
 svg{border:1px solid #ddd;background:#fcfcfc} .axis{stroke:#999} .grid{stroke:#eee}
 .series{fill:none;stroke:#1f77b4;stroke-width:2} .marker.drift{stroke:#d62728;stroke-width:2}
 .marker.warning{stroke:#ff7f0e;stroke-dasharray:4 3} .marker.improvement{stroke:#9467bd;stroke-dasharray:1 4}
 .marker.adaptation{stroke:#2ca02c;stroke-width:2;stroke-dasharray:2 2}
 .legend span{margin-right:18px} small{color:#777}
</style></head>
<body>
<h2>driftline <small id="model"></small></h2>
<div class="stats"><span>rolling <span id="metric">accuracy</span> <b id="rolling">-</b></span>
<span>events/s <b id="eps">-</b></span><span>consumer lag <b id="lag">-</b></span>
<span>labeled <b id="learned">0</b></span><span>detections <b id="ndet">0</b></span>
<span>adaptations <b id="nadapt">0</b></span></div>
<svg id="chart" width="960" height="360" viewBox="0 0 960 360"></svg>
<div class="legend"><span style="color:#1f77b4">&#9644; rolling metric</span>
<span style="color:#d62728">| drift detected</span><span style="color:#ff7f0e">| warning</span>
<span style="color:#9467bd">| improvement</span>
<span style="color:#2ca02c">| adaptation</span></div>
<script>
const W=960,H=360,L=50,R=10,T=10,B=30,NS="http://www.w3.org/2000/svg";
function el(n,a){const e=document.createElementNS(NS,n);for(const k in a)e.setAttribute(k,a[k]);return e}
function fmt(v,d){return v===null||v===undefined?"-":Number(v).toFixed(d)}
function draw(d){
 document.getElementById("model").textContent=d.model;
 document.getElementById("metric").textContent=d.metric;
 document.getElementById("rolling").textContent=fmt(d.rolling,3);
 document.getElementById("eps").textContent=fmt(d.events_per_s,0);
 document.getElementById("lag").textContent=fmt(d.lag,0);
 document.getElementById("learned").textContent=d.learned;
 document.getElementById("ndet").textContent=d.detections.length;
 document.getElementById("nadapt").textContent=d.adaptations.length;
 const svg=document.getElementById("chart");svg.replaceChildren();
 const s=d.series,xmax=Math.max(1,d.learned,...s.map(p=>p[0]));
 let ymin=0,ymax=1;
 if(d.metric!=="accuracy"&&s.length){ymax=Math.max(...s.map(p=>p[1]))*1.1||1}
 const x=v=>L+(W-L-R)*v/xmax,y=v=>H-B-(H-T-B)*(v-ymin)/(ymax-ymin);
 for(let i=0;i<=4;i++){const v=ymin+(ymax-ymin)*i/4;
  svg.append(el("line",{class:"grid",x1:L,x2:W-R,y1:y(v),y2:y(v)}));
  const t=el("text",{x:4,y:y(v)+4,"font-size":11});t.textContent=v.toFixed(2);svg.append(t)}
 svg.append(el("line",{class:"axis",x1:L,x2:W-R,y1:H-B,y2:H-B}));
 const xl=el("text",{x:W-R-160,y:H-8,"font-size":11});xl.textContent="labeled events ("+xmax+")";svg.append(xl);
 for(const [n,det,level] of d.detections){const m=el("line",{class:"marker "+level,
  x1:x(n),x2:x(n),y1:T,y2:H-B,"data-labeled":n,"data-detector":det});svg.append(m)}
 for(const [n,action] of d.adaptations){svg.append(el("line",{class:"marker adaptation",x1:x(n),x2:x(n),
  y1:T,y2:H-B,"data-labeled":n,"data-action":action}))}
 if(s.length)svg.append(el("polyline",{class:"series","data-points":s.length,
  points:s.map(p=>x(p[0]).toFixed(1)+","+y(p[1]).toFixed(1)).join(" ")}));
}
async function tick(){try{const r=await fetch("live.json",{cache:"no-store"});if(r.ok)draw(await r.json())}
 catch(e){} setTimeout(tick,1000)}
tick();
</script></body></html>
"""
