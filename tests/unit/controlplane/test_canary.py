"""Canary analysis table: better, worse, inconclusive, sparse canaries; interval; Argo limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adaspec.controlplane.counters import Counters
from adaspec.controlplane.policies import canary
from adaspec.controlplane.policies.canary import CanaryObservation, CanaryPolicy, CanaryState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = CanaryPolicy(
    interval_s=60, min_draft_tokens=500, iterations=3, failure_limit=0, inconclusive_limit=1
)


def side(rate: float, tokens: float = 1000) -> Counters:
    return Counters(drafts=tokens / 4, draft_tokens=tokens, accepted=rate * tokens)


def run(pairs: list[tuple[float, float]], tokens: float = 1000) -> list[str]:
    state = CanaryState(revision="r2", since=T0)
    kinds = []
    for i, (can, stable) in enumerate(pairs):
        obs = CanaryObservation(canary=side(can, tokens), stable=side(stable, tokens))
        decision, state = canary.decide(obs, POLICY, state, T0 + timedelta(seconds=60 * (i + 1)))
        kinds.append(decision.kind)
        if decision.kind in {"promote", "reject", "pause"}:
            break
    return kinds


@pytest.mark.parametrize(
    ("name", "pairs", "want"),
    [
        ("better canary", [(0.8, 0.7)] * 5, ["canary_check", "canary_check", "promote"]),
        ("equal canary", [(0.7, 0.7)] * 3, ["canary_check", "canary_check", "promote"]),
        ("worse canary", [(0.6, 0.7)] * 3, ["reject"]),
        ("worse after a good start", [(0.8, 0.7), (0.6, 0.7)], ["canary_check", "reject"]),
        ("inconclusive canary", [(0.69, 0.7)] * 3, ["canary_check", "pause"]),
    ],
)
def test_canary_table(name: str, pairs: list[tuple[float, float]], want: list[str]) -> None:
    assert run(pairs) == want, name


def test_sparse_canary_makes_no_decision() -> None:
    state = CanaryState(revision="r2", since=T0)
    obs = CanaryObservation(canary=side(0.1, 100), stable=side(0.7, 5000))
    decision, new = canary.decide(obs, POLICY, state, T0 + timedelta(minutes=5))
    assert (decision.kind, decision.reason) == ("none", "insufficient samples")
    assert new == state


def test_interval_not_elapsed() -> None:
    state = CanaryState(revision="r2", since=T0)
    decision, _ = canary.decide(CanaryObservation(side(0.9), side(0.7)), POLICY, state, T0)
    assert decision.reason == "interval not elapsed"


def test_failure_limit_tolerates_failures() -> None:
    policy = POLICY.model_copy(update={"failure_limit": 1})
    state = CanaryState(revision="r2", since=T0)
    worse = CanaryObservation(side(0.6), side(0.7))
    d, state = canary.decide(worse, policy, state, T0 + timedelta(minutes=1))
    assert d.kind == "canary_check" and state.failures == 1
    d, state = canary.decide(worse, policy, state, T0 + timedelta(minutes=2))
    assert d.kind == "reject"


def test_shorter_accepted_length_fails() -> None:
    # same acceptance rate, but the canary's drafts are shorter: fewer tokens per target pass
    can = Counters(drafts=500, draft_tokens=1000, accepted=700)
    stable = Counters(drafts=250, draft_tokens=1000, accepted=700)
    state = CanaryState(revision="r2", since=T0)
    d, _ = canary.decide(CanaryObservation(can, stable), POLICY, state, T0 + timedelta(minutes=1))
    assert d.kind == "reject" and d.inputs["length_delta"] == pytest.approx(-1.4)
