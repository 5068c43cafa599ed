"""Drift policy tables: steady, gradual, sudden, noisy, sparse, hysteresis and recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adaspec.controlplane.counters import Counters
from adaspec.controlplane.policies import drift
from adaspec.controlplane.policies.drift import DriftPolicy, DriftState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = DriftPolicy(min_draft_tokens=100, reference_draft_tokens=1000, slack=0.02, threshold=0.15)


def window(rate: float, tokens: float = 1000.0) -> Counters:
    return Counters(drafts=tokens / 4, draft_tokens=tokens, accepted=rate * tokens)


def run(rates: list[float], tokens: float = 1000.0) -> list[str]:
    """Feed one window per rate (the first builds the reference); return the decision kinds."""
    state = drift.reset_for("r1", T0)
    kinds = []
    for i, rate in enumerate(rates):
        decision, state = drift.decide(window(rate, tokens), POLICY, state, T0 + timedelta(minutes=i + 1))
        kinds.append(decision.kind)
    return kinds


NOISE = [0.71, 0.69, 0.72, 0.68, 0.70, 0.715, 0.685, 0.70, 0.69, 0.71]


@pytest.mark.parametrize(
    ("name", "rates", "first_drift"),
    [
        ("steady", [0.7] * 12, None),
        ("noisy around the reference", [0.7, *NOISE, *NOISE], None),
        ("sudden drop", [0.7, 0.7, 0.7, 0.4, 0.4], 3),
        ("gradual drift", [0.7] + [0.7 - 0.015 * i for i in range(1, 15)], 6),  # drop 0.09 by then
        ("small dip that recovers", [0.7, 0.7, 0.62, 0.7, 0.7, 0.7], None),
    ],
)
def test_drift_table(name: str, rates: list[float], first_drift: int | None) -> None:
    kinds = run(rates)
    got = kinds.index("drift") if "drift" in kinds else None
    assert got == first_drift, (name, kinds)
    assert kinds.count("drift") <= 1, "hysteresis: one drift event per episode"


def test_sparse_windows_accumulate_and_never_decide_alone() -> None:
    state = drift.reset_for("r1", T0)
    d, state = drift.decide(window(0.7, 1000), POLICY, state, T0)
    assert state.reference == pytest.approx(0.7)
    since = state.since
    for i in range(5):  # tiny windows of bad acceptance: not consumed, no decision
        d, state = drift.decide(window(0.1, 50), POLICY, state, T0 + timedelta(minutes=i + 1))
        assert d.kind == "none" and d.reason == "insufficient samples"
        assert state.since == since


def test_reference_needs_enough_tokens() -> None:
    state = drift.reset_for("r1", T0)
    d, state = drift.decide(window(0.7, 400), POLICY, state, T0)
    assert d.reason == "building reference" and state.reference is None
    d, state = drift.decide(window(0.5, 600), POLICY, state, T0)
    assert d.reason == "reference established"
    assert state.reference == pytest.approx((0.7 * 400 + 0.5 * 600) / 1000)


def test_recovery_after_hysteresis() -> None:
    kinds = run([0.7, 0.4, 0.4, 0.7, 0.7, 0.7, 0.4, 0.4])
    assert kinds == ["none", "drift", "none", "none", "none", "recovered", "drift", "none"]


def test_mean_accepted_length_metric() -> None:
    policy = POLICY.model_copy(update={"metric": "mean_accepted_length", "threshold": 0.5})
    state = drift.reset_for("r1", T0)
    _, state = drift.decide(Counters(drafts=250, draft_tokens=1000, accepted=700), policy, state, T0)
    assert state.reference == pytest.approx(3.8)
    d, _ = drift.decide(Counters(drafts=250, draft_tokens=1000, accepted=300), policy, state, T0)
    assert d.kind == "drift" and d.inputs["metric"] == "mean_accepted_length"


def test_state_round_trips_through_json() -> None:
    state = drift.reset_for("r1", T0)
    _, state = drift.decide(window(0.7), POLICY, state, T0)
    assert DriftState.model_validate_json(state.model_dump_json()) == state


def test_policy_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="treshold"):
        DriftPolicy.model_validate({"treshold": 0.1})


def test_a_window_short_of_samples_past_max_window_starts_again() -> None:
    """spec.adaptation.driftWindow: traffic older than the window is never compared."""
    policy = POLICY.model_copy(update={"max_window_s": 600.0})
    state = drift.reset_for("r1", T0)
    d, kept = drift.decide(window(0.7, 50), policy, state, T0 + timedelta(seconds=599))
    assert (d.reason, kept.since) == ("insufficient samples", T0)
    d, restarted = drift.decide(window(0.7, 50), policy, state, T0 + timedelta(seconds=601))
    assert d.kind == "none" and d.reason == "window expired with insufficient samples"
    assert restarted.since == T0 + timedelta(seconds=601)
    d, unbounded = drift.decide(window(0.7, 50), POLICY, state, T0 + timedelta(days=1))
    assert unbounded.since == T0  # no max_window_s: the window waits
