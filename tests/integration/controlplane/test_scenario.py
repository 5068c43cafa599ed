"""End to end over real HTTP and a real database (SQLite and PostgreSQL), simulated time."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adaspec.controlplane.actuators import REVISION_DIR
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
    # the runtime's admin load contract: the revision directory, its manifest's sha256, the role
    out = tmp_path / "runs" / "chat" / "chat-run1" / REVISION_DIR
    sha = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert fleet.loads[0] == {
        "revision": "r1",
        "artifact_uri": out.resolve().as_uri(),
        "sha256": sha,
        "role": "canary",
        "action": "start_canary",
    }
    assert fleet.loads[1] == {**fleet.loads[0], "role": "stable", "action": "promote"}
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
    # the runtime starts on its static draft (revision "static", no artifact), as the operator's pods do
    fleet = Fleet(drifting(candidate_rate=0.72, after_promotion=0.40, initial="static"), initial="static")
    try:
        cp = start(settings(fleet, tmp_path, "unused", initial="static"), store)
        run(cp, fleet, range(0, 40))
    finally:
        fleet.close()
    k = kinds(store)
    assert k[:6] == ["drift", "adapt", "start_canary", "canary_check", "canary_check", "promote"]
    assert k[6] == "rollback"
    assert phases(store) == {"static": "Promoted", "r1": "RolledBack"}
    assert [(b["action"], b["revision"]) for b in fleet.loads] == [
        ("start_canary", "r1"),
        ("promote", "r1"),
        ("rollback", "static"),
    ]
    back = {
        "revision": "static",
        "artifact_uri": None,
        "sha256": None,
        "role": "stable",
        "action": "rollback",
    }
    assert fleet.loads[-1] == back


def test_rollback_to_a_revision_without_artifact_fails_once(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72, after_promotion=0.40))
    try:
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 40))
    finally:
        fleet.close()
    assert kinds(store)[6] == "rollback"
    assert [b["action"] for b in fleet.loads] == ["start_canary", "promote"]  # r0 has nothing to load
    with store.factory() as s:
        action = s.execute(select(Action).where(Action.kind == "rollback")).scalar_one()
    assert (action.status, action.attempts) == ("failed", 1)
    assert "rollback of r0: no artifact_uri recorded" in (action.last_error or "")


def test_worse_canary_is_rejected(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.30))
    try:
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 20))
    finally:
        fleet.close()
    assert kinds(store)[:4] == ["drift", "adapt", "start_canary", "reject"]
    assert phases(store)["r1"] == "Rejected"
    assert fleet.loads[-1] == {  # the canary runtime goes back to its static draft
        "revision": "static",
        "artifact_uri": None,
        "sha256": None,
        "role": "canary",
        "action": "abort_canary",
    }
