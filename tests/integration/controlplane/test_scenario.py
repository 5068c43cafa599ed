"""End to end over real HTTP and a real database (SQLite and PostgreSQL), simulated time."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from adaspec.controlplane.store.models import (
    Action,
    AdaptationRun,
    DecisionRecord,
    DriftEvent,
    Revision,
    Speculator,
)
from adaspec.controlplane.wiring import Store

from .fleet import Fleet
from .scenario import drifting, kinds, run, settings, start


def phases(store: Store) -> dict[str, str]:
    with store.factory() as s:
        return {r.revision: r.phase for r in s.execute(select(Revision)).scalars()}


def test_drift_adapt_canary_promote(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72))
    try:
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 40))
    finally:
        fleet.close()
    assert kinds(store) == [
        "drift",
        "adapt",
        "start_canary",
        "canary_check",
        "canary_check",
        "promote",
        "guard_passed",
    ]
    assert phases(store) == {"r0": "Superseded", "r1": "Promoted"}
    assert [(b["action"], b["revision"]) for b in fleet.loads] == [("start_canary", "r1"), ("promote", "r1")]
    assert (tmp_path / "adapt-calls.log").read_text().split() == ["chat-run1"]
    with store.factory() as s:
        spec = s.execute(select(Speculator)).scalar_one()
        assert (spec.phase, spec.stable_revision, spec.canary_revision) == ("steady", "r1", None)
        assert spec.acceptance_rate == pytest.approx(0.72)
        assert s.execute(select(func.count()).select_from(DriftEvent)).scalar_one() == 1
        run_row = s.execute(select(AdaptationRun)).scalar_one()
        assert (run_row.status, run_row.candidate_revision, run_row.trigger) == ("succeeded", "r1", "drift")
        assert {a.status for a in s.execute(select(Action)).scalars()} == {"done"}
        drift = s.execute(select(DecisionRecord).where(DecisionRecord.kind == "drift")).scalar_one()
        assert drift.inputs["reference"] == pytest.approx(0.70)
        assert drift.inputs["value"] == pytest.approx(0.45)
        promote = s.execute(select(DecisionRecord).where(DecisionRecord.kind == "promote")).scalar_one()
        assert promote.inputs["acceptance_delta"] == pytest.approx(0.27)
        assert promote.actor == "policy"


def test_regression_after_promotion_rolls_back(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72, after_promotion=0.40))
    try:
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 40))
    finally:
        fleet.close()
    k = kinds(store)
    assert k[:6] == ["drift", "adapt", "start_canary", "canary_check", "canary_check", "promote"]
    assert k[6] == "rollback"
    assert phases(store) == {"r0": "Promoted", "r1": "RolledBack"}
    assert [(b["action"], b["revision"]) for b in fleet.loads] == [
        ("start_canary", "r1"),
        ("promote", "r1"),
        ("rollback", "r0"),
    ]


def test_worse_canary_is_rejected(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.30))
    try:
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 20))
    finally:
        fleet.close()
    assert kinds(store)[:4] == ["drift", "adapt", "start_canary", "reject"]
    assert phases(store)["r1"] == "Rejected"
    assert fleet.loads[-1]["action"] == "abort_canary"
