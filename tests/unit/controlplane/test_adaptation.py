"""Adaptation trigger table: triggers, cooldown, concurrency, budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adaspec.controlplane.policies import adaptation
from adaspec.controlplane.policies.adaptation import AdaptationObservation, AdaptationPolicy, AdaptationState

NOW = datetime(2026, 1, 2, tzinfo=UTC)
POLICY = AdaptationPolicy(cooldown_s=3600, max_concurrent=2, budget_runs=3, budget_window_s=86400)


def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


@pytest.mark.parametrize(
    ("obs", "starts", "kind", "reason"),
    [
        (AdaptationObservation(False, False, 0), (), "none", "no trigger"),
        (AdaptationObservation(True, False, 0), (), "adapt", "triggered by drift"),
        (AdaptationObservation(False, True, 0), (), "adapt", "triggered by schedule"),
        (AdaptationObservation(True, False, 0), (ago(0.5),), "none", "cooldown"),
        (AdaptationObservation(True, False, 0), (ago(2),), "adapt", "triggered by drift"),
        (AdaptationObservation(True, False, 2), (), "none", "concurrency limit"),
        (AdaptationObservation(True, False, 0, running_here=True), (), "none", "a run is already in flight"),
        (AdaptationObservation(True, False, 0), (ago(20), ago(10), ago(5)), "none", "budget exhausted"),
        (AdaptationObservation(True, False, 0), (ago(30), ago(10), ago(5)), "adapt", "triggered by drift"),
    ],
)
def test_trigger_table(
    obs: AdaptationObservation, starts: tuple[datetime, ...], kind: str, reason: str
) -> None:
    decision, state = adaptation.decide(obs, POLICY, AdaptationState(starts=starts), NOW)
    assert (decision.kind, decision.reason) == (kind, reason)
    if kind == "adapt":
        assert state.starts[-1] == NOW
        assert all(t > NOW - timedelta(days=1) for t in state.starts)


def test_drift_ignored_when_disabled() -> None:
    policy = POLICY.model_copy(update={"on_drift": False})
    decision, _ = adaptation.decide(AdaptationObservation(True, False, 0), policy, AdaptationState(), NOW)
    assert decision.reason == "no trigger"
