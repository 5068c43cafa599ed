"""Adaptation trigger: start a run on drift or schedule, within cooldown, concurrency and budget."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import Field

from .decision import Decision, PolicyConfig, PolicyState


class AdaptationPolicy(PolicyConfig):
    """When adaptation runs may start."""

    on_drift: bool = True
    cooldown_s: float = Field(
        default=3600.0, ge=0, description="minimum time between two runs of one speculator"
    )
    max_concurrent: int = Field(default=1, ge=1, description="runs in flight at once, fleet-wide")
    budget_runs: int = Field(default=6, ge=0, description="runs allowed per speculator per budget window")
    budget_window_s: float = Field(default=86400.0, gt=0)


@dataclass(frozen=True)
class AdaptationObservation:
    """What the trigger looks at: pending reasons and the fleet's runs in flight."""

    drift_pending: bool
    schedule_due: bool
    running_fleet: int
    running_here: bool = False


class AdaptationState(PolicyState):
    """Start times of this speculator's recent runs (for cooldown and budget)."""

    starts: tuple[datetime, ...] = ()


def decide(
    obs: AdaptationObservation, policy: AdaptationPolicy, state: AdaptationState, now: datetime
) -> tuple[Decision, AdaptationState]:
    """Return (adapt | none, new state); `none` carries the reason a pending trigger waits."""
    window_start = now - timedelta(seconds=policy.budget_window_s)
    recent = tuple(t for t in state.starts if t > window_start)
    trigger = "drift" if (obs.drift_pending and policy.on_drift) else "schedule" if obs.schedule_due else None
    inputs: dict[str, float | int | str | bool | None] = {
        "trigger": trigger,
        "running_fleet": obs.running_fleet,
        "runs_in_budget_window": len(recent),
        "budget_runs": policy.budget_runs,
    }
    if trigger is None:
        return Decision(kind="none", reason="no trigger", inputs=inputs), state
    if obs.running_here:
        return Decision(kind="none", reason="a run is already in flight", inputs=inputs), state
    if recent and (now - max(recent)).total_seconds() < policy.cooldown_s:
        inputs["cooldown_left_s"] = policy.cooldown_s - (now - max(recent)).total_seconds()
        return Decision(kind="none", reason="cooldown", inputs=inputs), state
    if obs.running_fleet >= policy.max_concurrent:
        return Decision(kind="none", reason="concurrency limit", inputs=inputs), state
    if len(recent) >= policy.budget_runs:
        return Decision(kind="none", reason="budget exhausted", inputs=inputs), state
    return Decision(kind="adapt", reason=f"triggered by {trigger}", inputs=inputs), AdaptationState(
        starts=(*recent, now)
    )
