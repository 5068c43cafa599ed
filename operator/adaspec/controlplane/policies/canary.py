"""Canary analysis: compare canary and stable acceptance per interval (Flagger/Argo Rollouts semantics).

Each check, once `interval_s` has passed and both sides have `min_draft_tokens`, is a success (every
delta canary - stable at or above its success bound), a failure (any delta below its failure bound) or
inconclusive (in between). `iterations` successes promote; more than `failure_limit` failures reject the
canary (Argo's failureLimit); more than `inconclusive_limit` inconclusive checks pause for a person
(Argo's Inconclusive phase). Too few samples is not a check: no decision is made on missing data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from ..counters import Counters
from .decision import Decision, Inputs, PolicyConfig, PolicyState


class CanaryPolicy(PolicyConfig):
    """Canary analysis settings (deltas are canary minus stable)."""

    interval_s: float = Field(default=300.0, gt=0)
    min_draft_tokens: int = Field(default=500, ge=1)
    success_acceptance_delta: float = 0.0
    failure_acceptance_delta: float = -0.02
    success_length_delta: float = 0.0
    failure_length_delta: float = -0.1
    iterations: int = Field(default=3, ge=1, description="successful checks needed to promote")
    failure_limit: int = Field(default=0, ge=0, description="failed checks tolerated; one more rejects")
    inconclusive_limit: int = Field(
        default=1, ge=0, description="inconclusive checks tolerated; one more pauses"
    )


@dataclass(frozen=True)
class CanaryObservation:
    """Counters of canary and stable pods since the last check."""

    canary: Counters
    stable: Counters


class CanaryState(PolicyState):
    """Progress of one canary."""

    revision: str
    since: datetime
    successes: int = 0
    failures: int = 0
    inconclusive: int = 0


def _delta(canary: float | None, stable: float | None) -> float | None:
    return None if canary is None or stable is None else canary - stable


def decide(
    obs: CanaryObservation, policy: CanaryPolicy, state: CanaryState, now: datetime
) -> tuple[Decision, CanaryState]:
    """Return (promote | reject | pause | canary_check | none, new state)."""
    waited = (now - state.since).total_seconds()
    base: Inputs = {"revision": state.revision, "waited_s": waited}
    if waited < policy.interval_s:
        return Decision(kind="none", reason="interval not elapsed", inputs=base), state
    tokens = min(obs.canary.draft_tokens, obs.stable.draft_tokens)
    if tokens < policy.min_draft_tokens:
        base.update(canary_draft_tokens=obs.canary.draft_tokens, stable_draft_tokens=obs.stable.draft_tokens)
        return Decision(kind="none", reason="insufficient samples", inputs=base), state
    acc = _delta(obs.canary.acceptance_rate, obs.stable.acceptance_rate)
    length = _delta(obs.canary.mean_accepted_length, obs.stable.mean_accepted_length)
    inputs: Inputs = {
        **base,
        "canary_acceptance": obs.canary.acceptance_rate,
        "stable_acceptance": obs.stable.acceptance_rate,
        "acceptance_delta": acc,
        "length_delta": length,
        "canary_draft_tokens": obs.canary.draft_tokens,
        "stable_draft_tokens": obs.stable.draft_tokens,
    }
    deltas = [(acc, policy.success_acceptance_delta, policy.failure_acceptance_delta)]
    if length is not None:
        deltas.append((length, policy.success_length_delta, policy.failure_length_delta))
    if any(d is None or d < fail for d, _, fail in deltas):
        result = "failure"
    elif all(d is not None and d >= ok for d, ok, _ in deltas):
        result = "success"
    else:
        result = "inconclusive"
    new = state.model_copy(
        update={
            "since": now,
            "successes": state.successes + (result == "success"),
            "failures": state.failures + (result == "failure"),
            "inconclusive": state.inconclusive + (result == "inconclusive"),
        }
    )
    inputs.update(
        result=result, successes=new.successes, failures=new.failures, inconclusive=new.inconclusive
    )
    if new.failures > policy.failure_limit:
        return Decision(kind="reject", reason="canary failed its analysis", inputs=inputs), new
    if new.inconclusive > policy.inconclusive_limit:
        return Decision(kind="pause", reason="canary analysis inconclusive", inputs=inputs), new
    if new.successes >= policy.iterations:
        return Decision(kind="promote", reason="canary passed its analysis", inputs=inputs), new
    return Decision(kind="canary_check", reason=f"check {result}", inputs=inputs), new
