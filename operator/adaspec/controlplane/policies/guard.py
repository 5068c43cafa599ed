"""Post-promotion guard: roll back when the new stable revision's acceptance falls beyond the margin
below the previous revision's within the guard window."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ..counters import Counters
from .decision import Decision, Inputs, PolicyConfig, PolicyState


class GuardPolicy(PolicyConfig):
    """Guard window and allowed regression."""

    window_s: float = Field(default=1800.0, gt=0)
    min_draft_tokens: int = Field(default=1000, ge=1)
    max_drop: float = Field(
        default=0.03, ge=0, description="acceptance drop below the previous revision allowed"
    )


class GuardState(PolicyState):
    """What the promoted revision is held against."""

    revision: str
    previous_revision: str
    previous_acceptance: float
    promoted_at: datetime


def decide(
    window: Counters, policy: GuardPolicy, state: GuardState, now: datetime
) -> tuple[Decision, GuardState]:
    """Return (rollback | guard_passed | none, state) for the new stable's counters since promotion."""
    elapsed = (now - state.promoted_at).total_seconds()
    value = window.acceptance_rate
    inputs: Inputs = {
        "revision": state.revision,
        "previous_revision": state.previous_revision,
        "previous_acceptance": state.previous_acceptance,
        "acceptance": value,
        "draft_tokens": window.draft_tokens,
        "elapsed_s": elapsed,
    }
    if value is not None and window.draft_tokens >= policy.min_draft_tokens:
        if value < state.previous_acceptance - policy.max_drop:
            return Decision(kind="rollback", reason="regression after promotion", inputs=inputs), state
    if elapsed >= policy.window_s:
        return Decision(kind="guard_passed", reason="guard window over", inputs=inputs), state
    return Decision(kind="none", reason="guarding", inputs=inputs), state
