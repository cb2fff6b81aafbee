"""The group model in-process: the real `Syncer` (rounds, rebase, adoption) over an in-memory sync log, three
members fed a stream split by event id, against one model and three unsynced ones. No Kafka: it isolates what the
merge rules give from what the service's timing does (compare with benchmarks/scaleout.py).

``--mode lockstep``: every member sends after every ``--per-round`` events of the stream and all adopt together;
``--mode async``: a member sends once it learned its share of a round and is not waiting (as the service does).
Prints prequential accuracy of single, none and average (what each event's member predicted before learning it).
``--privacy CLIP,NOISE`` (repeatable) adds average runs with sync.privacy (and turns the scaler off in every run:
privacy refuses it), each with the epsilon its members spent (delta 1e-5): the accuracy cost of privacy.

    PYTHONPATH=. python benchmarks/scaleout_inprocess.py --stream Hyperplane-200 --mode async
    PYTHONPATH=. python benchmarks/scaleout_inprocess.py --stream Hyperplane-50 --privacy 0.1,1 --privacy 0.1,4
"""

from __future__ import annotations

import argparse
import zlib

from prometheus_client import CollectorRegistry

from benchmarks.scaleout import STREAMS, _events
from driftline.core import Event
from driftline.learners.capabilities import mergeable
from driftline.learners.factory import build_learner
from driftline.monitoring.metrics import SyncMetrics
from driftline.settings import ModelSettings, SyncSettings
from driftline.stream.sync import Syncer, SyncState
from tests.unit.test_syncer import Log, Reader, Writer

MEMBERS = 3
CFG = ModelSettings(name="LogisticRegression", classes=[False, True])


def _member_of(event: Event) -> int:
    return zlib.crc32(event.id.encode()) % 6 % MEMBERS  # 6 partitions, 2 per member


def accuracy(events: list[Event], run: str, per_round: int, mode: str, *, cfg: ModelSettings = CFG,
             privacy: tuple[float, float] | None = None) -> tuple[float, float]:
    """(prequential accuracy, epsilon spent by a member: 0 without privacy)."""
    if run == "single":
        learner, hits = build_learner(cfg), 0
        for e in events:
            assert e.label is not None
            hits += learner.predict_one(e).value == e.label
            learner.learn_one(e, e.label)
        return hits / len(events), 0.0
    log = Log()
    learners = [build_learner(cfg) for _ in range(MEMBERS)]
    syncers = []
    for j, learner in enumerate(learners):
        model = mergeable(learner)
        assert model is not None
        # async: a member is due once it learned its share of a round since the group model it adopted
        dp = {"clip": privacy[0], "noise_multiplier": privacy[1], "seed": j} if privacy else {}
        due = SyncSettings(mode="average", every_seconds=1e9, every_events=max(1, per_round // MEMBERS),
                           privacy=dp)
        syncers.append(Syncer(due, learner, model,
                              SyncState(), topic="sync", group="g", member=f"m{j}", writer=Writer(log),
                              reader=Reader(log), metrics=SyncMetrics(CollectorRegistry())))
    for s in syncers:
        s.join()
    hits = 0
    for i, e in enumerate(events):
        m = _member_of(e)
        assert e.label is not None
        hits += learners[m].predict_one(e).value == e.label
        learners[m].learn_one(e, e.label)
        if run == "none":
            continue
        if mode == "lockstep" and (i + 1) % per_round == 0:
            for s in syncers:
                s.prepare()
                s.send_update()
            for s in syncers:
                s.poll()
        elif mode == "async" and (i + 1) % 100 == 0:
            for s in syncers:
                s.poll()
                if s.due():
                    s.prepare()
                    s.send_update()
    return hits / len(events), max(s.epsilon for s in syncers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", default="Hyperplane-200", choices=sorted(STREAMS))
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--per-round", type=int, default=4_000, help="events of the stream per round")
    ap.add_argument("--mode", default="async", choices=("lockstep", "async"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--privacy", action="append", default=[], metavar="CLIP,NOISE",
                    help="an average run with sync.privacy clip and noise_multiplier (repeatable)")
    args = ap.parse_args()
    events = [Event.model_validate(e) for e in _events(STREAMS[args.stream], args.events, args.seed)]
    cfg = CFG.model_copy(update={"scale": not args.privacy})
    out = {run: round(accuracy(events, run, args.per_round, args.mode, cfg=cfg)[0], 4)
           for run in ("single", "none", "average")}
    for spec in args.privacy:
        clip, noise = (float(v) for v in spec.split(","))
        acc, eps = accuracy(events, "average", args.per_round, args.mode, cfg=cfg, privacy=(clip, noise))
        out[f"average, clip {clip:g}, noise {noise:g} (epsilon {eps:.1f})"] = round(acc, 4)
    print(out)


if __name__ == "__main__":
    main()
