"""Post-promotion guard table: regression rolls back, a healthy revision passes the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adaspec.controlplane.counters import Counters
from adaspec.controlplane.policies import guard
from adaspec.controlplane.policies.guard import GuardPolicy, GuardState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = GuardPolicy(window_s=600, min_draft_tokens=1000, max_drop=0.03)
STATE = GuardState(revision="r2", previous_revision="r1", previous_acceptance=0.7, promoted_at=T0)


def w(rate: float, tokens: float) -> Counters:
    return Counters(drafts=tokens / 4, draft_tokens=tokens, accepted=rate * tokens)


@pytest.mark.parametrize(
    ("rate", "tokens", "after_s", "kind"),
    [
        (0.60, 2000, 60, "rollback"),  # regression after promotion
        (0.68, 2000, 60, "none"),  # within the margin
        (0.60, 500, 60, "none"),  # too few samples to judge
        (0.72, 2000, 600, "guard_passed"),
        (0.60, 2000, 900, "rollback"),  # a regression found late still rolls back
    ],
)
def test_guard_table(rate: float, tokens: float, after_s: float, kind: str) -> None:
    decision, _ = guard.decide(w(rate, tokens), POLICY, STATE, T0 + timedelta(seconds=after_s))
    assert decision.kind == kind
