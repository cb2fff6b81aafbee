"""What an adaptation policy sees while it decides and acts: `PolicyContext`.

The `Adapter` builds one for each drift it acts on. A policy reads the recent windows, the replay
sample, the starting state and the detection; it changes the learner in place; it may take the
background learner (the adapter then drops it). Nothing else of the adapter is within its reach.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from driftline.adapters.detectors import Detection
from driftline.core import Event, Label
from driftline.learners.base import Learner


@dataclass
class BackgroundLearner:
    learner: Learner
    started_at: int  # labeled events when it started
    learned: int = 0


@dataclass
class PolicyContext:
    learner: Learner  # the active learner: policies change it in place
    initial_state: Mapping[str, Any]  # the starting model's state (pretrained, or fresh)
    recent: Sequence[tuple[Event, Label | float]]  # the latest labeled events, oldest first
    inputs: Sequence[Event]  # the latest predicted inputs, labeled or not
    replay: Sequence[tuple[Event, Label | float]]  # a reservoir sample of the labeled stream so far
    seed: int
    actions_taken: int  # adaptation actions so far (policies seed their randomness with it)
    detection: Detection | None = None  # the detection being acted on
    background: BackgroundLearner | None = None
    background_taken: bool = False

    def take_background(self) -> BackgroundLearner:
        """The background learner, which the adapter drops once the policy has used it."""
        assert self.background is not None, "take_background() without a background learner (see ready())"
        self.background_taken = True
        return self.background
