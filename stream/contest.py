"""Champion and challengers inside the pipeline: the challengers predict and learn every event beside the
champion, their predictions go to the shadow topic, each model's loss goes to the race
(`adapters.promotion.Race`), and a promotion switches the serving lane, logged, counted and audited.

The processor serves the champion (`Contest.champion`) and calls `predict` after publishing its prediction
and `learn` after it learned a label; a challenger that fails on one event is logged and counted
(``driftline_challenger_errors_total``) and the served stream goes on.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from driftline.adapters.promotion import MANUAL, TEST, Promotion, Race
from driftline.core import Event
from driftline.monitoring.metrics import ServiceMetrics
from driftline.stream.audit import AuditPublisher
from driftline.stream.codec import encode_prediction
from driftline.stream.lanes import Lane, loss
from driftline.stream.observers import Labeled, Predicted
from driftline.stream.records import InboundRecord
from driftline.stream.sink import OutputSink

log = logging.getLogger(__name__)

RACE = "race"


class Contest:
    def __init__(self, lanes: Sequence[Lane], race: Race, *, sink: OutputSink, metrics: ServiceMetrics,
                 audit: AuditPublisher, shadow_topic: str | None) -> None:
        self.lanes = list(lanes)
        self.race = race
        self.sink = sink
        self.metrics = metrics
        self.audit = audit
        self.shadow_topic = shadow_topic
        self._index = {lane.name: i for i, lane in enumerate(self.lanes)}
        self._champion = self._index[race.champion]
        self._task = self.lanes[0].learner.task
        self.promotions: deque[Promotion] = deque(maxlen=10_000)  # the latest changes of champion, for reports
        for lane in self.lanes:  # every series from the start at 0: a first promotion is a change Prometheus sees
            for reason in (TEST, MANUAL):
                metrics.promotions.labels(lane.name, reason)
        self.publish_serving()

    @property
    def champion(self) -> Lane:
        return self.lanes[self._champion]

    def predict(self, served: Predicted) -> dict[str, Any]:
        """Every challenger predicts the event the champion served (to the shadow topic; its own observers see
        it); each model's predicted value by name, the champion's included."""
        event, rec = served.event, served.record
        values: dict[str, Any] = {self.champion.name: served.prediction.value}
        for i, lane in enumerate(self.lanes):
            if i == self._champion:
                continue
            t0 = time.perf_counter()
            try:
                pred = lane.learner.predict_one(event)
            except Exception as exc:
                self._failed(lane, "predict", event, rec, exc)
                continue
            dt = time.perf_counter() - t0
            lane.predict_times.append(dt)
            values[lane.name] = pred.value
            if self.shadow_topic is not None:
                self.sink.publish(self.shadow_topic, event.id, encode_prediction(
                    event_id=event.id, prediction=pred.value, proba=pred.proba, model=lane.name,
                    model_version=lane.learner.version, model_updates=lane.learner.updates, latency_ms=dt * 1000.0,
                    source=rec.coordinates, predicted_at_ms=served.predicted_at_ms))
            if lane.on_predicted:
                mine = Predicted(event, pred, rec, dt, served.predicted_at_ms)
                for hook in lane.on_predicted:
                    if detections := hook(mine):
                        lane.detected(detections, event)
        return values

    def learn(self, item: Labeled) -> Labeled:
        """Every challenger learns the label the champion just learned and scores its own prediction; the race
        sees every model's loss (a promotion serves the new champion from the next event on). Returns the
        champion's own view of ``item``: its own prediction (the champion may have changed since the event was
        served)."""
        shadow = item.shadow
        task = self._task
        champion = self.champion
        own = shadow.get(champion.name) if shadow is not None else item.predicted
        losses: dict[str, float | None] = {champion.name: loss(task, item.label, own)}
        for i, lane in enumerate(self.lanes):
            if i == self._champion:
                continue
            t1 = time.perf_counter()
            try:
                lane.learner.learn_one(item.event, item.label)
            except Exception as exc:
                self._failed(lane, "learn", item.event, item.record, exc)
                losses[lane.name] = None
                continue
            lane.learn_times.append(time.perf_counter() - t1)
            predicted = shadow.get(lane.name) if shadow is not None else None
            losses[lane.name] = loss(task, item.label, predicted)
            theirs = item._replace(predicted=predicted)
            lane.learned.items.append(theirs)
            for hook in lane.on_learned:
                if detections := hook(theirs):
                    lane.detected(detections, item.event)
        decided = self.race.update(losses)
        if decided is not None:
            self._promoted(decided, RACE, item)
        return item._replace(predicted=own) if own is not item.predicted else item

    def promote(self, name: str, *, by: str = "manual") -> Promotion:
        """Make the model ``name`` the champion now (KeyError naming the models when there is none)."""
        done = self.race.promote(name)
        self._promoted(done, by)
        return done

    def _failed(self, lane: Lane, stage: str, event: Event, rec: InboundRecord, exc: Exception) -> None:
        self.metrics.challenger_errors.labels(lane.name, stage).inc()
        log.warning("challenger %s: %s failed for event %r at %s: %r", lane.name, stage, event.id, rec.coordinates,
                    exc)

    def _promoted(self, p: Promotion, by: str, item: Labeled | None = None) -> None:
        """Switch the serving lane; logged, counted and audited (a test's promotion with the labeled event that
        completed its evidence: predictions from the next event on carry the new champion's name)."""
        self._champion = self._index[p.champion]
        self.promotions.append(p)
        learner = self.champion.learner
        self.metrics.promotions.labels(p.champion, p.reason).inc()
        self.publish_serving()
        if p.reason == MANUAL:
            log.warning("model %s promoted to champion by hand (%s; was %s)", p.champion, by, p.previous)
        else:
            log.warning("model %s promoted to champion over %s after %d labeled events: error %.4f vs %.4f over %d "
                        "paired events, %s p=%.3g (alpha %.3g)", p.champion, p.previous, p.labeled,
                        p.loss_champion or 0.0, p.loss_previous or 0.0, p.window, p.test, p.p_value or 0.0,
                        p.alpha or 0.0)
        where = {"event_id": item.event.id, "source": item.record.coordinates} if item is not None else {}
        self.audit.publish({**p.record(), "by": by, **where, "model_version": learner.version,
                            "model_updates": learner.updates})

    def publish_serving(self) -> None:
        for i, lane in enumerate(self.lanes):
            self.metrics.serving.labels(lane.name).set(1 if i == self._champion else 0)

    # -- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.race.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.race.load_state_dict(state)
        self._champion = self._index[self.race.champion]
        self.publish_serving()
