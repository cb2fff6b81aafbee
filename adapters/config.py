"""Settings of drift detection and adaptation: detectors, input detectors, the ladder of policies, the guard.

Detector and policy names are validated against their registries (`adapters.detectors.DETECTORS`,
`adapters.policies.POLICIES`), and so is which policies need labels.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from driftline.adapters.detectors import DETECTORS
from driftline.adapters.policies import POLICIES
from driftline.config_base import Frozen, registered


class DetectorSettings(Frozen):
    """One drift detector on the prequential error stream."""

    name: str  # ADWIN, PageHinkley, KSWIN, DDM, EDDM, HDDM_A, HDDM_W, FHDDM
    params: dict[str, Any] = Field(default_factory=dict)
    # "warning": report this detector's drifts as warnings (a more sensitive early detector: it starts
    # the background learner, and never acts on its own).
    signals: Literal["drift", "warning"] = "drift"

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return registered("detector", DETECTORS, v)


class InputDriftSettings(Frozen):
    """Label-free drift detection on the inputs: a recent window against a reference window."""

    # ks: a two-sample Kolmogorov-Smirnov test per numeric feature (Bonferroni over features);
    # mmd: maximum mean discrepancy on the backbone's embeddings, threshold calibrated on the reference.
    kind: Literal["ks", "mmd"] | None = None  # None: off
    reference: int = Field(1000, ge=50, le=100_000)  # first events (and the first after each detection)
    window: int = Field(500, ge=20, le=100_000)  # the recent events compared with the reference
    stride: int = Field(250, ge=1, le=100_000)  # test every this many events
    alpha: float = Field(1e-4, gt=0, lt=1)  # ks: significance per test over all features
    calibration_rounds: int = Field(200, ge=20, le=10_000)  # mmd: reference splits the threshold is set from
    margin: float = Field(1.5, ge=1.0)  # mmd: threshold = the largest calibration statistic x margin

    @model_validator(mode="after")
    def _calibratable(self) -> InputDriftSettings:
        if self.kind == "mmd" and self.window > self.reference - 2:
            raise ValueError(f"mmd calibrates its threshold on splits of the reference into a window-sized part and "
                             f"the rest (two events at least): window ({self.window}) must be at most reference - 2 "
                             f"({self.reference - 2})")
        return self


class PolicySettings(Frozen):
    """One rung of the adaptation ladder."""

    name: str  # a registered policy: background, reset, replay_burst, adabn, adversarial, ...
    params: dict[str, Any] = Field(default_factory=dict)
    # Which detections this rung acts on: error-stream detectors, input detectors, or both.
    on: Literal["error", "input", "any"] = "error"

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return registered("policy", POLICIES, v)


class GuardSettings(Frozen):
    """After an adaptation the model before it keeps learning beside the adapted one (a shadow);
    if the adapted model does worse over the next ``window`` labeled events, it is rolled back."""

    window: int = Field(500, ge=0, le=1_000_000)  # 0: no guard
    tolerance: float = Field(0.0, ge=0)  # how much worse (accuracy, or MAE for regression) is tolerated


class DriftSettings(Frozen):
    """Drift detection and the adaptation it triggers (each detection and action is logged, counted
    and, with topics.audit, published)."""

    detectors: list[DetectorSettings] = Field(default_factory=list)
    input: InputDriftSettings = Field(default_factory=InputDriftSettings)
    # The ladder, cheapest first: a drift acts with the first rung that can; a drift within
    # escalate_within labeled events of the previous action (or after a rollback) starts one rung higher.
    policies: list[PolicySettings] = Field(default_factory=list)
    cooldown: int = Field(500, ge=0)  # labeled events after an action in which detections do not act
    escalate_within: int = Field(3000, ge=0)
    window: int = Field(1000, ge=10, le=1_000_000)  # recent labeled (and unlabeled) events kept for adapting
    replay_buffer: int = Field(2000, ge=0, le=1_000_000)  # reservoir sample of labeled events (source replay)
    guard: GuardSettings = Field(default_factory=GuardSettings)

    @model_validator(mode="after")
    def _consistent(self) -> DriftSettings:
        names = [p.name for p in self.policies]
        label_free = [n for n, cls in POLICIES.items() if not cls.needs_labels]
        for i, p in enumerate(self.policies):
            if p.on != "error" and POLICIES[p.name].needs_labels:
                raise ValueError(f"policies[{i}]: {p.name} learns from labels and cannot act on input detections "
                                 f"(on: {p.on}); use {' or '.join(label_free)} for label-free adaptation")
        for name in dict.fromkeys(names):
            if POLICIES[name].once and names.count(name) > 1:
                raise ValueError(f"policies: {name} may appear once")
        return self


