"""The Grafana dashboards that ship with driftline, as code.

`DASHBOARDS` lists every panel with its PromQL; `build` turns a dashboard into Grafana's JSON model
(template variables ``instance`` and ``model``; drift detections and adaptation actions as
annotations). ``python scripts/gen_dashboards.py`` writes ``deploy/grafana/dashboards/*.json``; a
test keeps the files in sync with this module, and an integration test runs every panel's queries
against a real Prometheus scraping a real service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEL = 'instance=~"$instance"'
MSEL = f'{SEL},model=~"$model"'


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # timeseries | stat
    gpu: bool = False  # has data only where the service runs a model on a GPU
    sync: bool = False  # has data only where the service syncs its model with the group (sync.mode)
    race: bool = False  # has data only where the service runs several models (models: champion and challengers)


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    annotations: tuple[tuple[str, str, str], ...] = field(default=())  # (name, PromQL, colour)


def _quantiles(metric: str, sel: str, window: str = "1m") -> tuple[tuple[str, str], ...]:
    return tuple((f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{{sel}}}[{window}])))",
                  f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99))


ANNOTATIONS = (
    ("drift detections", f'changes(driftline_drift_detections_total{{{SEL},level="drift"}}[1m]) > 0', "red"),
    ("adaptations", f"changes(driftline_adaptations_total{{{SEL}}}[1m]) > 0", "green"),
)

DASHBOARDS = (
    Dashboard("driftline-quality", "driftline / model quality", (
        Panel("Prequential accuracy (classification)", (
            (f'driftline_prequential_accuracy_ratio{{{MSEL},window="rolling"}}', "rolling {{model}}"),
            (f'driftline_prequential_accuracy_ratio{{{MSEL},window="cumulative"}}', "cumulative {{model}}")),
            "percentunit", "Scored on the prediction made before each label was known."),
        Panel("Prequential error (regression)", (
            (f'driftline_prequential_mae{{{MSEL},window="rolling"}}', "MAE rolling {{model}}"),
            (f'driftline_prequential_rmse{{{MSEL},window="rolling"}}', "RMSE rolling {{model}}"),
            (f'1 - driftline_prequential_accuracy_ratio{{{MSEL},window="rolling"}}', "error rate {{model}}")),
            "short", "MAE/RMSE for regression models; 1 - accuracy for classifiers."),
        Panel("Label coverage", ((f"driftline_label_coverage_ratio{{{MSEL}}}", "{{model}}"),), "percentunit",
              "Labeled / predicted events."),
        Panel("Label delay", _quantiles("driftline_label_delay_seconds", SEL, "5m"), "s",
              "Event timestamp to its label's, for labels joined from the labels topic."),
        Panel("Pending label joins", ((f"driftline_pending_labels{{{SEL}}}", "{{side}}"),), "short"),
        Panel("Drift detections", (
            (f"sum by (detector, level) (increase(driftline_drift_detections_total{{{SEL}}}[5m]))",
             "{{detector}} {{level}}"),), "short"),
        Panel("Adaptation actions", (
            (f"sum by (detector, action) (increase(driftline_adaptations_total{{{SEL}}}[5m]))",
             "{{action}} ({{detector}})"),), "short"),
        Panel("Model version", ((f"driftline_model_version{{{MSEL}}}", "{{model}}"),), "short",
              "Bumped by every adaptation, swap, rollback or restore."),
        Panel("Expired predictions", (
            (f"sum by (reason) (increase(driftline_labels_expired_total{{{SEL}}}[5m])) or vector(0)", "{{reason}}"),),
            "short"),
    ), ANNOTATIONS),
    Dashboard("driftline-throughput", "driftline / throughput and latency", (
        Panel("Events per second", (
            (f"sum by (outcome) (rate(driftline_events_total{{{SEL}}}[1m]))", "{{outcome}}"),), "ops"),
        Panel("Predict latency per event", _quantiles("driftline_predict_latency_seconds", MSEL), "s"),
        Panel("Learn latency per event", _quantiles("driftline_learn_latency_seconds", MSEL), "s"),
        Panel("End-to-end latency", _quantiles("driftline_end_to_end_latency_seconds", SEL), "s",
              "Kafka timestamp of the event to its prediction acknowledged."),
        Panel("Batch size", _quantiles("driftline_batch_records", SEL), "short"),
        Panel("Training backlog and back-pressure", (
            (f"driftline_training_backlog_windows{{{MSEL}}}", "windows waiting {{model}}"),
            (f"driftline_consumer_paused{{{SEL}}}", "consumer paused"),
            (f"increase(driftline_backpressure_pauses_total{{{SEL}}}[5m])", "pauses / 5m"),
            (f"increase(driftline_checkpoint_deferrals_total{{{SEL}}}[5m])", "save points put off / 5m")), "short",
              "Learners that train off the poll loop (Continual): windows of labeled events waiting for training, "
              "whether the consumer is paused until training catches up, and save points put off to a batch end "
              "between two windows (the loop does not wait for one)."),
    ), ANNOTATIONS),
    Dashboard("driftline-kafka", "driftline / Kafka", (
        Panel("Consumer lag", ((f"driftline_consumer_lag_records{{{SEL}}}", "{{topic}}/{{partition}}"),), "short"),
        Panel("Dead letters by reason", (
            (f"sum by (reason) (rate(driftline_dead_letters_total{{{SEL}}}[5m]))", "{{reason}}"),), "ops"),
        Panel("Output publish errors", (
            (f"sum by (topic) (rate(driftline_output_publish_errors_total{{{SEL}}}[5m])) or vector(0)", "{{topic}}"),),
            "ops"),
        Panel("Retried Kafka errors", (
            (f"sum by (operation, error) (rate(driftline_kafka_retriable_errors_total{{{SEL}}}[5m])) or vector(0)",
             "{{operation}} {{error}}"),), "ops"),
    ), ()),
    Dashboard("driftline-group", "driftline / group model (sync)", (
        Panel("Group model round", ((f"driftline_sync_round{{{SEL}}}", "{{instance}}"),), "short",
              "The last merged round each member adopted: equal across members when the group is in step "
              "(sync.mode ensemble: the snapshots each member sent).",
              sync=True),
        Panel("Rounds", (
            (f"sum by (closed) (increase(driftline_sync_rounds_total{{{SEL}}}[5m]))", "{{closed}}"),), "short",
              "Rounds merged per 5 minutes; timed_out: closed without a member that did not send in time.",
              sync=True),
        Panel("Members per round", ((f"driftline_sync_round_members{{{SEL}}}", "{{instance}}"),), "short",
              "Members whose updates made the last round (ensemble: members in each one's vote, itself included).",
              sync=True),
        Panel("Updates", (
            (f"sum by (outcome) (increase(driftline_sync_updates_total{{{SEL}}}[5m]))", "{{outcome}}"),), "short",
              "Updates sent, merged, or stale (their round closed without them: their learning goes into the next).",
              sync=True),
        Panel("Sync traffic", (
            (f"sum by (direction) (rate(driftline_sync_bytes_total{{{SEL}}}[1m]))", "{{direction}}"),), "Bps",
              sync=True),
        Panel("Merge duration", _quantiles("driftline_sync_merge_seconds", SEL, "5m"), "s", sync=True),
        Panel("Since the last adopted round", (
            (f"time() - driftline_sync_last_adopted_timestamp_seconds{{{SEL}}}", "{{instance}}"),), "s", sync=True),
        Panel("Refused records and diverged rounds", (
            (f"sum by (reason) (increase(driftline_sync_refused_records_total{{{SEL}}}[5m])) or vector(0)",
             "refused {{reason}}"),
            (f"increase(driftline_sync_diverged_rounds_total{{{SEL}}}[5m])", "diverged")), "short",
              "Refused: sync records of another model kind or format; ensemble: unsigned snapshots and snapshots "
              "whose signature does not verify (forged, or another sync.key). Diverged: a round whose published "
              "digest differs from this member's (should stay 0).", sync=True),
        Panel("Privacy budget spent", ((f"driftline_sync_privacy_epsilon{{{SEL}}}", "{{instance}}"),), "short",
              "sync.privacy: epsilon (at sync.privacy.delta) each member has spent on the updates it sent, by "
              "Opacus's RDP accountant; 0 without privacy.", sync=True),
    ), ()),
    Dashboard("driftline-race", "driftline / champion and challengers", (
        Panel("Prequential quality per model", (
            (f'driftline_prequential_accuracy_ratio{{{SEL},window="rolling"}}', "accuracy {{model}}"),
            (f'driftline_prequential_mae{{{SEL},window="rolling"}}', "MAE {{model}}")), "short",
              "Each model's own rolling accuracy (or MAE), and 'served': what the predictions topic got.", race=True),
        Panel("Serving model", ((f"driftline_model_serving{{{SEL}}} == 1", "{{model}}"),), "short",
              "The champion: the model whose predictions are served.", race=True),
        Panel("Promotions", (
            (f"sum by (model, reason) (increase(driftline_promotions_total{{{SEL}}}[5m])) or vector(0)",
             "{{model}} ({{reason}})"),), "short",
              "Changes of champion: by the paired test (test) or by hand (manual).", race=True),
        Panel("Labeled events per model", (
            (f"sum by (model) (rate(driftline_labeled_events_total{{{SEL}}}[1m]))", "{{model}}"),), "ops",
              race=True),
        Panel("Predict latency per model (p99)", (
            (f"histogram_quantile(0.99, sum by (le, model) (rate(driftline_predict_latency_seconds_bucket{{{SEL}}}"
             f"[1m])))", "{{model}}"),), "s", "What each challenger costs per event.", race=True),
        Panel("Challenger errors", (
            (f"sum by (model, stage) (rate(driftline_challenger_errors_total{{{SEL}}}[5m])) or vector(0)",
             "{{model}} {{stage}}"),), "ops",
              "Events a challenger failed to predict or learn (the served stream is unaffected).", race=True),
    ), (("promotions", f"changes(driftline_promotions_total{{{SEL}}}[1m]) > 0", "purple"),)),
    Dashboard("driftline-process", "driftline / process", (
        Panel("CPU", ((f"rate(process_cpu_seconds_total{{{SEL}}}[1m])", "{{instance}}"),), "percentunit",
              "CPU seconds per second (1.0 = one core)."),
        Panel("Resident memory", ((f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}"),), "bytes"),
        Panel("GPU memory", ((f"driftline_gpu_memory_bytes{{{SEL}}}", "{{device}}"),), "bytes", gpu=True),
        Panel("GPU utilisation", ((f"driftline_gpu_utilization_ratio{{{SEL}}}", "{{device}}"),), "percentunit",
              gpu=True),
        Panel("Checkpoint age", ((f"time() - driftline_checkpoint_last_timestamp_seconds{{{SEL}}}", "{{instance}}"),),
              "s"),
        Panel("Checkpoint duration", _quantiles("driftline_checkpoint_duration_seconds", SEL, "10m"), "s"),
        Panel("Service up", ((f'up{{{SEL},job="driftline"}}', "{{instance}}"),), "short", kind="stat"),
    ), ()),
)


def _variable(name: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": name, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "includeAll": True,
            "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1}


def build(d: Dashboard) -> dict[str, Any]:
    """Grafana's JSON model of ``d`` (schema 39, Grafana 10/11)."""
    ds = {"type": "prometheus", "uid": "${datasource}"}
    panels = []
    for i, p in enumerate(d.panels):
        panels.append({
            "id": i + 1, "type": p.kind, "title": p.title, "description": p.description, "datasource": ds,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": p.unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if p.kind == "timeseries" else {},
            "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend, "datasource": ds}
                        for j, (expr, legend) in enumerate(p.targets)],
        })
    annotations = [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                    "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                    "type": "dashboard"}]
    for name, expr, colour in d.annotations:
        annotations.append({"name": name, "datasource": ds, "enable": True, "iconColor": colour, "expr": expr,
                            "step": "15s", "titleFormat": name,
                            "textFormat": "{{detector}} {{level}}{{action}}{{model}} {{reason}}",
                            "useValueForTime": False})
    return {
        "uid": d.uid, "title": d.title, "tags": ["driftline"], "timezone": "browser", "schemaVersion": 39,
        "version": 1, "editable": True, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": annotations},
        "templating": {"list": [
            {"name": "datasource", "label": "datasource", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("instance", 'label_values(driftline_up, instance)'),
            _variable("model", 'label_values(driftline_model_version{instance=~"$instance"}, model)'),
        ]},
        "panels": panels,
    }
