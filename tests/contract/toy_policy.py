"""A policy that exists only in the tests: proof that adding a policy is one class and one registry line.

`tests/conftest.py` imports this module, so "nudge" is registered before anything reads the registry:
settings accept it (and apply its ``needs_labels``), and the policy contract suite runs it on every
learner kind its ``check`` accepts, with no other edit anywhere.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from driftline.adapters.context import PolicyContext
from driftline.adapters.policies import Policy, _Params, register


class NudgeParams(_Params):
    passes: int = Field(1, ge=1, le=10)


@register
class Nudge(Policy):
    """Learns the recent labeled window ``passes`` more times."""

    name = "nudge"
    params_model = NudgeParams

    def ready(self, ctx: PolicyContext) -> str | None:
        return "no recent labeled events" if not ctx.recent else None

    def apply(self, ctx: PolicyContext) -> dict[str, Any]:
        recent = list(ctx.recent)
        for _ in range(self.params.passes):
            for event, label in recent:
                ctx.learner.learn_one(event, label)
        return {"relearned": len(recent), "passes": self.params.passes}
