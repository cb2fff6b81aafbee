"""The adaptation ladder: turns drift detections into policy actions, with a cooldown, escalation
and a rollback guard.

- A drift acts with the first rung (from the current one up) whose policy matches the detection's
  source (error stream or inputs) and can act now. A drift within ``escalate_within`` labeled events
  of the previous action, or after a rollback, starts one rung higher; otherwise the ladder starts
  again at the bottom.
- After an action, detections do not act for ``cooldown`` labeled events, nor while its guard runs.
- Guard: the model as it was before the action keeps learning beside the adapted one (a shadow).
  Both are scored on the next ``guard.window`` labeled events (the shadow predicts each event when
  its label is learned); if the adapted model's error is higher than the shadow's by more than
  ``guard.tolerance``, the shadow replaces it: a rollback that loses no labels.
- A warning starts the background learner (when the ladder has one); it learns every labeled event
  until a drift swaps it in, or it is dropped after ``max_age`` labeled events.

Every action, rollback and guard outcome is logged, counted (``driftline_adaptations_total``) and
handed to ``emit`` (the pipeline's audit publisher).
"""

from __future__ import annotations

import logging
import pickle
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.adapters.config import DriftSettings
from driftline.adapters.context import BackgroundLearner, PolicyContext
from driftline.adapters.detectors import DRIFT, WARNING, Detection
from driftline.adapters.policies import Background, Policy, build_policy
from driftline.core import Event, Label
from driftline.errors import ConfigError
from driftline.learners.base import Learner
from driftline.learners.capabilities import self_adapting
from driftline.monitoring.metrics import ServiceMetrics

log = logging.getLogger(__name__)

ROLLBACK = "rollback"
NONE = "none"


@dataclass
class Guard:
    shadow: Learner
    action: dict[str, Any]
    started_at: int
    n: int = 0
    loss_adapted: float = 0.0
    loss_shadow: float = 0.0


@dataclass(frozen=True, slots=True)
class Action:
    """One adaptation step, for reports: when (labeled events), what, and why."""

    labeled: int
    action: str
    detector: str


@dataclass
class _Ladder:
    rung: int = 0
    last_action_at: int | None = None
    escalate: bool = False  # the last action was rolled back: the next drift climbs
    cooldown_until: int = 0
    actions: deque[Action] = field(default_factory=lambda: deque(maxlen=10_000))


class Adapter:
    """Owns the ladder, the recent windows, the replay buffer, the background learner and the guard."""

    def __init__(self, learner: Learner, cfg: DriftSettings, *, seed: int, metrics: ServiceMetrics,
                 emit: Callable[[dict[str, Any]], None] | None = None, model: str | None = None) -> None:
        self.learner = learner
        self.cfg = cfg
        self.seed = seed
        self.metrics = metrics
        self.emit = emit
        self.model = model or learner.name  # the name audit records give (with challengers: the configured one)
        self.policies: list[tuple[Policy, str]] = []
        adapts_itself = self_adapting(learner)
        if adapts_itself is not None and cfg.policies:
            raise ConfigError(f"drift.policies: {adapts_itself.ladder_unsupported}")
        for i, p in enumerate(cfg.policies):
            policy = build_policy(p.name, p.params, f"drift.policies[{i}] ({p.name})")
            policy.check(learner)
            self.policies.append((policy, p.on))
        self.initial_state = learner.state_dict()
        self.recent: deque[tuple[Event, Label | float]] = deque(maxlen=cfg.window)
        self.inputs: deque[Event] = deque(maxlen=cfg.window)
        self.replay: list[tuple[Event, Label | float]] = []
        self._rng = random.Random(seed)
        self.labeled = 0
        self.seen_labeled = 0  # for the replay reservoir
        self.background: BackgroundLearner | None = None
        self.guard: Guard | None = None
        self.ladder = _Ladder()
        self._background_policy = next((p for p, _ in self.policies if isinstance(p, Background)), None)

    def action_names(self) -> list[str]:
        """Every value the ``action`` label of driftline_adaptations_total can take here."""
        return [p.name for p, _ in self.policies] + [ROLLBACK, NONE]

    @property
    def actions_taken(self) -> int:
        return len(self.ladder.actions)

    @property
    def actions(self) -> deque[Action]:
        return self.ladder.actions

    # -- the stream -------------------------------------------------------------------------------
    def observe_input(self, event: Event) -> None:
        """Every predicted event (the recent inputs label-free policies adapt on)."""
        self.inputs.append(event)

    def observe_labeled(self, event: Event, label: Label | float, predicted: Any) -> None:
        """After the active learner learned ``event``: feed the windows, the background learner, the guard."""
        self.labeled += 1
        self.recent.append((event, label))
        self._reservoir((event, label))
        bg = self.background
        if bg is not None:
            if self.labeled - bg.started_at > self._max_age():
                log.info("background learner dropped: no drift within %d labeled events of its warning",
                         self._max_age())
                self._record({"action": "background_dropped", "detector": "", "level": WARNING,
                              "details": {"learned": bg.learned}}, count=False)
                self.background = None
            else:
                _quiet_learn(bg.learner, event, label)
                bg.learned += 1
        guard = self.guard
        if guard is not None:
            guard.loss_adapted += _loss(self.learner.task, label, predicted)
            shadow_pred = guard.shadow.predict_one(event).value
            guard.loss_shadow += _loss(self.learner.task, label, shadow_pred)
            _quiet_learn(guard.shadow, event, label)
            guard.n += 1
            if guard.n >= self.cfg.guard.window:
                self._settle(guard)

    def on_detection(self, d: Detection) -> None:
        """A detector fired: start a background learner at a warning, act at a drift."""
        if d.level == WARNING and d.source == "error":
            bg_policy = self._background_policy
            if bg_policy is not None and self.background is None:
                start = self.initial_state if bg_policy.params.start == "initial" else self.learner.state_dict()
                self.background = BackgroundLearner(self.learner.spawn(start), self.labeled)
                self._record({"action": "background_started", "detector": d.detector, "level": d.level,
                              "details": {"start": bg_policy.params.start}}, count=False)
            return
        if d.level != DRIFT or not self.policies:
            return
        lad = self.ladder
        if self.guard is not None or self.labeled < lad.cooldown_until:
            log.info("drift from %s does not act: %s", d.detector,
                     "an adaptation's guard is running" if self.guard is not None else "within the cooldown")
            return
        recent = lad.last_action_at is not None and self.labeled - lad.last_action_at <= self.cfg.escalate_within
        lad.rung = min(lad.rung + 1, len(self.policies) - 1) if (recent or lad.escalate) else 0
        lad.escalate = False
        skipped: list[str] = []
        ctx = self._context(d)
        for policy, on in self.policies[lad.rung:]:
            if on != "any" and on != d.source:
                continue
            why = policy.ready(ctx)
            if why is not None:
                skipped.append(f"{policy.name}: {why}")
                continue
            self._act(policy, ctx, skipped)
            return
        log.warning("drift from %s: no policy on the ladder from rung %d could act (%s)", d.detector, lad.rung,
                    "; ".join(skipped) or "none matches its source")
        self._record({"action": NONE, "detector": d.detector, "level": d.level, "details": {"skipped": skipped}})

    # -- acting -----------------------------------------------------------------------------------
    def _context(self, d: Detection) -> PolicyContext:
        """What the ladder's policies may read and change for detection ``d``."""
        return PolicyContext(learner=self.learner, initial_state=self.initial_state, recent=self.recent,
                             inputs=self.inputs, replay=self.replay, seed=self.seed,
                             actions_taken=self.actions_taken, detection=d, background=self.background)

    def _act(self, policy: Policy, ctx: PolicyContext, skipped: list[str]) -> None:
        learner, d = self.learner, ctx.detection
        assert d is not None
        before = {"version": learner.version, "updates": learner.updates}
        snapshot = learner.state_dict() if self.cfg.guard.window else None
        details = policy.apply(ctx)
        if ctx.background_taken:
            self.background = None
        learner.set_version(before["version"] + 1)
        lad = self.ladder
        lad.last_action_at = self.labeled
        lad.cooldown_until = self.labeled + self.cfg.cooldown
        record = {"action": policy.name, "detector": d.detector, "level": d.level, "rung": lad.rung,
                  "details": {**details, **({"skipped": skipped} if skipped else {})},
                  "model_version_before": before["version"], "model_updates_before": before["updates"],
                  "model_version_after": learner.version, "model_updates_after": learner.updates}
        self._record(record)
        if snapshot is not None:
            shadow = learner.spawn(snapshot, detach=policy.touches_backbone)
            self.guard = Guard(shadow, record, self.labeled)

    def _settle(self, guard: Guard) -> None:
        self.guard = None
        adapted, unadapted = guard.loss_adapted / guard.n, guard.loss_shadow / guard.n
        stats = {"window": guard.n, "error_adapted": adapted, "error_unadapted": unadapted,
                 "of": guard.action["action"], "of_version": guard.action["model_version_after"]}
        if adapted > unadapted + self.cfg.guard.tolerance:
            version = self.learner.version
            self.learner.load_state_dict(guard.shadow.state_dict())
            self.learner.set_version(version + 1)
            self.ladder.escalate = True
            self._record({"action": ROLLBACK, "detector": guard.action["detector"], "level": DRIFT,
                          "details": stats, "model_version_before": version,
                          "model_version_after": self.learner.version})
        else:
            self._record({"action": "guard_passed", "detector": guard.action["detector"], "level": DRIFT,
                          "details": stats}, count=False)

    def _record(self, record: dict[str, Any], *, count: bool = True) -> None:
        action, detector = record["action"], record["detector"]
        record = {"type": "adaptation", **record, "model": self.model, "labeled": self.labeled}
        if count:
            self.metrics.adaptations.labels(self.model, detector, action).inc()
            self.ladder.actions.append(Action(self.labeled, action, detector))
        level = logging.WARNING if action in (ROLLBACK, NONE) else logging.INFO
        log.log(level, "adaptation %s (detector %s) after %d labeled events: %s", action, detector or "-",
                self.labeled, record.get("details"))
        if self.emit is not None:
            self.emit(record)

    # -- helpers ----------------------------------------------------------------------------------
    def _max_age(self) -> int:
        assert self._background_policy is not None
        return int(self._background_policy.params.max_age)

    def _reservoir(self, pair: tuple[Event, Label | float]) -> None:
        size = self.cfg.replay_buffer
        self.seen_labeled += 1
        if size == 0:
            return
        if len(self.replay) < size:
            self.replay.append(pair)
            return
        j = self._rng.randrange(self.seen_labeled)
        if j < size:
            self.replay[j] = pair

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        bg, guard = self.background, self.guard
        return {"blob": pickle.dumps({
            "recent": list(self.recent), "inputs": list(self.inputs), "replay": self.replay,
            "rng": self._rng.getstate(), "labeled": self.labeled, "seen_labeled": self.seen_labeled,
            "ladder": self.ladder,
            "background": None if bg is None else (bg.learner.state_dict(), bg.started_at, bg.learned),
            "guard": None if guard is None else (guard.shadow.state_dict(), guard.action, guard.started_at, guard.n,
                                                 guard.loss_adapted, guard.loss_shadow),
        }, protocol=pickle.HIGHEST_PROTOCOL)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        s = pickle.loads(state["blob"])
        self.recent = deque(s["recent"], maxlen=self.cfg.window)
        self.inputs = deque(s["inputs"], maxlen=self.cfg.window)
        self.replay = s["replay"]
        self._rng.setstate(s["rng"])
        self.labeled, self.seen_labeled, self.ladder = s["labeled"], s["seen_labeled"], s["ladder"]
        self.background = None
        if s["background"] is not None:
            st, started, learned = s["background"]
            self.background = BackgroundLearner(self.learner.spawn(st), started, learned)
        self.guard = None
        if s["guard"] is not None:
            st, action, started, n, la, ls = s["guard"]
            detach = any(p.touches_backbone for p, _ in self.policies if p.name == action["action"])
            self.guard = Guard(self.learner.spawn(st, detach=detach), action, started, n, la, ls)


def _loss(task: str, label: Label | float, predicted: Any) -> float:
    if task == "classification":
        return 0.0 if predicted == label else 1.0
    if predicted is None:
        return abs(float(label))
    return abs(float(label) - float(predicted))


def _quiet_learn(learner: Learner, event: Event, label: Label | float) -> None:
    """Learn on a side learner; what the active learner took, the side one takes too (else: skip it)."""
    try:
        learner.learn_one(event, label)
    except ValueError as exc:  # EventRejected and the like: the active learner's outcome already counted
        log.debug("side learner skipped event %r: %s", event.id, exc)
