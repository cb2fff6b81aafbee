"""``sync.mode: ensemble``: a member serves the vote of its own model and the latest snapshots of the other
members' models, for models that cannot be averaged (Hoeffding trees, forests, windowed models).

`GroupEnsemble` is the serving learner: it learns with the member's own model only, and predicts with every
member's model, weighted by each one's recent prequential quality (classification: the probabilities averaged
with the members' rolling accuracies as weights, a soft vote; regression: the predictions averaged with weights
1 / rolling MAE). A member's quality travels with its snapshot (measured where it was learned); this member's
own is measured here, on its own model's predictions, over the last `SCORE_WINDOW` labeled events. Members
that have not been scored yet weigh nothing while any member has been; when none has, all weigh the same.
Peers are ordered by name, so every member computes the same vote from the same snapshots.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from driftline.core import Event, Label, Prediction
from driftline.learners.base import Learner
from driftline.learners.capabilities import Capability

SCORE_WINDOW = 1000  # labeled events a member's rolling quality is measured over
PENDING = 100_000  # own predictions kept for labels that come later (labels topic)


@dataclass
class Score:
    """A member's rolling prequential quality: accuracy (classification) or MAE (regression), over ``n``."""

    value: float = 0.0
    n: int = 0

    def weight(self, task: str) -> float:
        if self.n == 0:
            return 0.0
        if task == "regression":
            return 1.0 / (self.value + 1e-9)
        return self.value


@dataclass
class Peer:
    """Another member's model, as of its latest snapshot."""

    member: str
    learner: Learner
    score: Score
    updates: int  # labeled events its model had learned
    sent_at: float  # unix seconds (its record's timestamp)


class RollingScore:
    """This member's own model's quality over its last `SCORE_WINDOW` scored predictions."""

    def __init__(self, task: str) -> None:
        self.task = task
        self._window: deque[float] = deque(maxlen=SCORE_WINDOW)
        self._sum = 0.0

    def add(self, predicted: Any, label: Any) -> None:
        if predicted is None:
            return
        if self.task == "regression":
            value = abs(float(predicted) - float(label))
            if not math.isfinite(value):
                return
        else:
            value = 1.0 if predicted == label else 0.0
        if len(self._window) == self._window.maxlen:
            self._sum -= self._window[0]
        self._window.append(value)
        self._sum += value

    def score(self) -> Score:
        n = len(self._window)
        return Score(self._sum / n if n else 0.0, n)


class GroupEnsemble:
    """The serving learner of ``sync.mode: ensemble``: ``own`` learns; predictions are the weighted vote of
    ``own`` and the peers' snapshots (`set_peer` / `drop_peer`, called between batches by the sync step)."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    def __init__(self, own: Learner, member: str) -> None:
        self.own = own
        self.member = member
        self.task = own.task
        self.name = own.name
        self.peers: dict[str, Peer] = {}
        self._slots: list[Peer | None] = [None]  # every member by name; None: this one
        self.own_score = RollingScore(own.task)
        self._pending: OrderedDict[str, Any] = OrderedDict()  # event id -> own prediction, until its label

    # -- the peers -------------------------------------------------------------------------------------
    def set_peer(self, peer: Peer) -> None:
        self.peers[peer.member] = peer
        self._order()

    def drop_peer(self, member: str) -> None:
        if self.peers.pop(member, None) is not None:
            self._order()

    def _order(self) -> None:
        names = sorted({*self.peers, self.member})
        self._slots = [self.peers.get(m) if m != self.member else None for m in names]

    # -- Learner ---------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.own.version

    @property
    def updates(self) -> int:
        return self.own.updates

    @property
    def features_dropped(self) -> int:
        return self.own.features_dropped

    def set_version(self, version: int) -> None:
        self.own.set_version(version)

    def prepare_batch(self, xs: Sequence[Event]) -> None:
        self.own.prepare_batch(xs)

    def predict_one(self, x: Event) -> Prediction:
        mine = self.own.predict_one(x)
        pending = self._pending
        pending[x.id] = mine.value
        if len(pending) > PENDING:
            pending.popitem(last=False)
        if not self.peers:
            return mine
        return vote(self.task, [(mine, self.own_score.score()) if peer is None else (_predict(peer, x), peer.score)
                                for peer in self._slots])

    def learn_one(self, x: Event, y: Label | float) -> None:
        self.own.learn_one(x, y)
        predicted = self._pending.pop(x.id, None)
        self.own_score.add(predicted, y)

    def state_dict(self) -> dict[str, Any]:
        return self.own.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.own.load_state_dict(state)

    def spawn(self, state: Mapping[str, Any], *, detach: bool = False) -> Learner:
        return self.own.spawn(state, detach=detach)


def model_kind(learner: Learner) -> str:
    """What must be equal for two members' models to vote together: the state's kind, task, model, classes."""
    state = learner.state_dict()
    return json.dumps({k: state.get(k) for k in ("kind", "task", "name", "classes")}, sort_keys=True, default=str)


def _predict(peer: Peer, x: Event) -> Prediction:
    """A peer's prediction; one that fails (e.g. an input its model cannot take) is left out of the vote: the
    event is still served by the others."""
    try:
        return peer.learner.predict_one(x)
    except Exception:  # its failure is the peer model's, not the event's
        return Prediction(None)


def vote(task: str, votes: Sequence[tuple[Prediction, Score]]) -> Prediction:
    """The members' predictions combined (see the module's text); members that predict nothing are left out."""
    present = [(p, s) for p, s in votes if p.value is not None]
    if not present:
        return Prediction(None) if task == "regression" else Prediction(None, {})
    weights = [s.weight(task) for _, s in present]
    if not any(w > 0 for w in weights):
        weights = [1.0] * len(present)
    total = sum(weights)
    if task == "regression":
        mean = 0.0
        for (p, _), w in zip(present, weights, strict=True):
            mean += w * float(cast(float, p.value))
        return Prediction(mean / total)
    proba: dict[Label, float] = {}
    for (p, _), w in zip(present, weights, strict=True):
        if w == 0:
            continue
        member_proba: Mapping[Label, float] = p.proba if p.proba else {cast(Label, p.value): 1.0}
        for label, q in member_proba.items():
            proba[label] = proba.get(label, 0.0) + w * float(q)
    proba = {k: v / total for k, v in proba.items()}
    best = max(proba.items(), key=lambda kv: kv[1])[0]
    return Prediction(best, proba)
