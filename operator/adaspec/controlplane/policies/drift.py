"""Drift policy: a one-sided Page-Hinkley (CUSUM) test for a drop against a reference window.

Page, "Continuous inspection schemes" (Biometrika 1954); Hinkley (1971). Each evaluation window with
enough draft tokens gives one value x (acceptance rate or mean accepted length); the statistic
g = max(0, g + (reference - x) - slack) grows only while x stays below reference - slack, and drift is
declared when g > threshold. Hysteresis: once drifted, the detector stays quiet until x has been back
within `recover_margin` of the reference for `recover_windows` windows in a row.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from ..counters import Counters
from .decision import Decision, PolicyConfig, PolicyState


class DriftPolicy(PolicyConfig):
    """Settings of the drift detector."""

    metric: str = Field(default="acceptance_rate", pattern="^(acceptance_rate|mean_accepted_length)$")
    min_draft_tokens: int = Field(
        default=200, ge=1, description="a window with fewer draft tokens is not used yet"
    )
    reference_draft_tokens: int = Field(
        default=2000, ge=1, description="draft tokens that make the reference"
    )
    slack: float = Field(default=0.02, ge=0, description="drop tolerated without accumulating evidence")
    threshold: float = Field(
        default=0.15, gt=0, description="evidence (sum of drops beyond slack) that is drift"
    )
    max_window_s: float | None = Field(
        default=None,
        gt=0,
        description="a window still short of min_draft_tokens after this long starts again (traffic "
        "older than this is never compared); None: windows wait as long as it takes",
    )
    recover_margin: float = Field(default=0.03, ge=0)
    recover_windows: int = Field(default=3, ge=1)


class DriftState(PolicyState):
    """Reference and detector statistic of one speculator's stable revision."""

    revision: str | None = None
    since: datetime | None = None
    ref_drafts: float = 0.0
    ref_draft_tokens: float = 0.0
    ref_accepted: float = 0.0
    reference: float | None = None
    statistic: float = 0.0
    drifted: bool = False
    recovered_windows: int = 0


def reset_for(revision: str, now: datetime) -> DriftState:
    """Return a fresh state for `revision` whose first window starts at `now`."""
    return DriftState(revision=revision, since=now)


def decide(
    window: Counters, policy: DriftPolicy, state: DriftState, now: datetime
) -> tuple[Decision, DriftState]:
    """Return (drift | recovered | none, new state) for the counters of one window since `state.since`.

    A window with fewer than `min_draft_tokens` draft tokens is not consumed: `since` stays, the next
    call sees a longer window (sparse traffic never decides on a handful of tokens).
    """
    if window.draft_tokens < policy.min_draft_tokens:
        age = (now - state.since).total_seconds() if state.since is not None else 0.0
        if policy.max_window_s is not None and age > policy.max_window_s:
            return Decision(
                kind="none",
                reason="window expired with insufficient samples",
                inputs={"draft_tokens": window.draft_tokens, "window_s": age},
            ), state.model_copy(update={"since": now})
        return Decision(
            kind="none",
            reason="insufficient samples",
            inputs={"draft_tokens": window.draft_tokens, "min_draft_tokens": policy.min_draft_tokens},
        ), state
    value = window.metric(policy.metric)
    if value is None:  # draft tokens without drafts: a malformed source, never a decision
        return Decision(kind="none", reason="no drafts in window", inputs={}), state
    if state.reference is None:
        ref = (
            Counters(
                drafts=state.ref_drafts, draft_tokens=state.ref_draft_tokens, accepted=state.ref_accepted
            )
            + window
        )
        reference = ref.metric(policy.metric) if ref.draft_tokens >= policy.reference_draft_tokens else None
        new = state.model_copy(
            update={
                "since": now,
                "ref_drafts": ref.drafts,
                "ref_draft_tokens": ref.draft_tokens,
                "ref_accepted": ref.accepted,
                "reference": reference,
            }
        )
        reason = "reference established" if reference is not None else "building reference"
        return Decision(kind="none", reason=reason, inputs={"value": value, "reference": reference}), new
    reference = state.reference
    statistic = max(0.0, state.statistic + (reference - value) - policy.slack)
    inputs: dict[str, float | int | str | bool | None] = {
        "metric": policy.metric,
        "value": round(value, 6),
        "reference": round(reference, 6),
        "statistic": round(statistic, 6),
        "threshold": policy.threshold,
        "draft_tokens": window.draft_tokens,
    }
    if state.drifted:
        recovered = value >= reference - policy.recover_margin
        streak = state.recovered_windows + 1 if recovered else 0
        if streak >= policy.recover_windows:
            return Decision(kind="recovered", reason="back within recover_margin", inputs=inputs), (
                state.model_copy(
                    update={"since": now, "statistic": 0.0, "drifted": False, "recovered_windows": 0}
                )
            )
        return Decision(kind="none", reason="drift already reported", inputs=inputs), state.model_copy(
            update={"since": now, "statistic": statistic, "recovered_windows": streak}
        )
    if statistic > policy.threshold:
        return Decision(kind="drift", reason=f"{policy.metric} dropped below reference", inputs=inputs), (
            state.model_copy(
                update={"since": now, "statistic": statistic, "drifted": True, "recovered_windows": 0}
            )
        )
    return Decision(kind="none", reason="within reference", inputs=inputs), state.model_copy(
        update={"since": now, "statistic": statistic}
    )
