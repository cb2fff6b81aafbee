"""The group model in-process: the real `Syncer` (rounds, rebase, adoption) over an in-memory sync log, three
members fed a stream split by event id, against one model and three unsynced ones. No Kafka: it isolates what the
merge rules give from what the service's timing does (compare with benchmarks/scaleout.py).

``--mode lockstep``: every member sends after every ``--per-round`` events of the stream and all adopt together;
``--mode async``: a member sends once it learned its share of a round and is not waiting (as the service does).
Prints prequential accuracy of single, none and average (what each event's member predicted before learning it).

    PYTHONPATH=. python benchmarks/scaleout_inprocess.py --stream Hyperplane-200 --mode async
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


def accuracy(events: list[Event], run: str, per_round: int, mode: str) -> float:
    if run == "single":
        learner, hits = build_learner(CFG), 0
        for e in events:
            assert e.label is not None
            hits += learner.predict_one(e).value == e.label
            learner.learn_one(e, e.label)
        return hits / len(events)
    log = Log()
    learners = [build_learner(CFG) for _ in range(MEMBERS)]
    syncers = []
    for j, learner in enumerate(learners):
        model = mergeable(learner)
        assert model is not None
        # async: a member is due once it learned its share of a round since the group model it adopted
        due = SyncSettings(mode="average", every_seconds=1e9, every_events=max(1, per_round // MEMBERS))
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
    return hits / len(events)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", default="Hyperplane-200", choices=sorted(STREAMS))
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--per-round", type=int, default=4_000, help="events of the stream per round")
    ap.add_argument("--mode", default="async", choices=("lockstep", "async"))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    events = [Event.model_validate(e) for e in _events(STREAMS[args.stream], args.events, args.seed)]
    print({run: round(accuracy(events, run, args.per_round, args.mode), 4) for run in ("single", "none", "average")})


if __name__ == "__main__":
    main()
