"""A person's transitions (pause, resume, promote, rollback) and the pause an AdaptiveSpeculator asks for:
the phase they leave, the decision and the typed action they record, and what they refuse."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from adaspec.controlplane import lifecycle
from adaspec.controlplane.actions import AbortCanary, Promote, Rollback, StartCanary, parse_action
from adaspec.controlplane.ledger import set_phase
from adaspec.controlplane.state import load_state
from adaspec.controlplane.store.models import Action, DecisionRecord, Revision, Speculator

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "ab" * 32


def chat(s: Session) -> Speculator:
    """A steady speculator on r0, with a registered candidate r1 (child of r0)."""
    spec = Speculator(name="chat", namespace="team-a", phase="steady", stable_revision="r0", updated_at=T0)
    s.add(spec)
    s.flush()
    set_phase(s, spec, "r0", "Promoted", "initial revision", T0)
    set_phase(s, spec, "r1", "Candidate", "registered", T0)
    row = s.execute(select(Revision).where(Revision.revision == "r1")).scalar_one()
    row.parent, row.artifact_uri, row.sha256 = "r0", "file:///runs/r1", SHA
    return spec


def owed(s: Session) -> list[object]:
    return [parse_action(a.kind, a.payload) for a in s.execute(select(Action).order_by(Action.id)).scalars()]


def test_pause_and_resume_by_a_person(factory: sessionmaker[Session]) -> None:
    with factory() as s, s.begin():
        spec = chat(s)
        d = lifecycle.manual_pause(s, spec, "api:alice", "maintenance", T0)
        assert (d.kind, d.inputs, spec.phase, spec.paused_from) == (
            "pause",
            {"from": "steady"},
            "paused",
            "steady",
        )
        assert not load_state(spec).paused_by_cr
        with pytest.raises(lifecycle.TransitionError, match="speculator chat is already paused"):
            lifecycle.manual_pause(s, spec, "api:alice", "again", T0)
        with pytest.raises(lifecycle.TransitionError, match="chat: paused by a person, not by its Adaptive"):
            lifecycle.manual_resume(s, spec, "kubernetes", "cleared", T0, by_cr=True)
        d = lifecycle.manual_resume(s, spec, "api:alice", "done", T0)
        assert (d.kind, d.inputs, spec.phase, spec.paused_from) == (
            "resume",
            {"to": "steady"},
            "steady",
            None,
        )
        with pytest.raises(lifecycle.TransitionError, match=r"chat is not paused \(phase steady\)"):
            lifecycle.manual_resume(s, spec, "api:alice", "done", T0)
        log = [(r.kind, r.actor, r.reason) for r in s.execute(select(DecisionRecord)).scalars()]
        assert owed(s) == []
    assert log == [("pause", "api:alice", "maintenance"), ("resume", "api:alice", "done")]


def test_a_pause_by_the_resource_is_marked_and_cleared(factory: sessionmaker[Session]) -> None:
    with factory() as s, s.begin():
        spec = chat(s)
        spec.phase = "guard"
        lifecycle.manual_pause(s, spec, "kubernetes", "spec.paused is true", T0, by_cr=True)
        assert (spec.phase, spec.paused_from, load_state(spec).paused_by_cr) == ("paused", "guard", True)
        d = lifecycle.manual_resume(s, spec, "kubernetes", "cleared", T0, by_cr=True)
        assert (d.inputs, spec.phase, load_state(spec).paused_by_cr) == ({}, "guard", False)


def test_promote_by_hand_starts_a_canary_then_promotes_it(factory: sessionmaker[Session]) -> None:
    with factory() as s, s.begin():
        spec = chat(s)
        with pytest.raises(lifecycle.UnknownRevision, match="speculator chat: revision 'r9' not found"):
            lifecycle.manual_promote(s, spec, "api:alice", "try", "r9", T0)
        with pytest.raises(lifecycle.TransitionError, match=r"chat: no canary to promote \(phase steady\)"):
            lifecycle.manual_promote(s, spec, "api:alice", "try", None, T0)
        d = lifecycle.manual_promote(s, spec, "api:alice", "by hand", "r1", T0)
        assert (d.kind, spec.phase, spec.canary_revision) == ("start_canary", "canary", "r1")
        st = load_state(spec)
        assert st.canary is not None and (st.canary.revision, st.canary_started) == ("r1", T0)
        with pytest.raises(
            lifecycle.TransitionError, match=r"chat: no canary r2 to promote \(phase canary\)"
        ):
            lifecycle.manual_promote(s, spec, "api:alice", "try", "r2", T0)
        later = T0 + timedelta(minutes=5)
        d = lifecycle.manual_promote(s, spec, "api:alice", "good enough", None, later)
        assert (d.kind, d.inputs) == ("promote", {"revision": "r1"})
        # no traffic seen on r0 during the canary: nothing to guard against, steady on r1
        assert (spec.phase, spec.stable_revision, spec.canary_revision) == ("steady", "r1", None)
        assert load_state(spec).canary is None and load_state(spec).canary_started is None
        actions = owed(s)
        phases = {r.revision: r.phase for r in s.execute(select(Revision)).scalars()}
    who = {"speculator": "chat", "namespace": "team-a"}
    assert actions == [
        StartCanary(**who, revision="r1", artifact_uri="file:///runs/r1", sha256=SHA, parent="r0"),
        Promote(**who, revision="r1", previous="r0", artifact_uri="file:///runs/r1", sha256=SHA),
    ]
    assert phases == {"r0": "Superseded", "r1": "Promoted"}


def test_rollback_by_hand_aborts_a_canary_else_goes_back_to_the_parent(
    factory: sessionmaker[Session],
) -> None:
    with factory() as s, s.begin():
        spec = chat(s)
        with pytest.raises(
            lifecycle.TransitionError, match="chat: stable revision has no parent to roll back"
        ):
            lifecycle.manual_rollback(s, spec, "api:alice", "back", None, T0)
        lifecycle.manual_promote(s, spec, "api:alice", "try", "r1", T0)
        d = lifecycle.manual_rollback(s, spec, "api:alice", "not now", None, T0)
        assert (d.kind, spec.phase, spec.canary_revision, spec.stable_revision) == (
            "reject",
            "steady",
            None,
            "r0",
        )
        spec.stable_revision = "r1"  # as if r1 had been promoted since
        with pytest.raises(lifecycle.UnknownRevision, match="revision 'r7' not found"):
            lifecycle.manual_rollback(s, spec, "api:alice", "back", "r7", T0)
        with pytest.raises(lifecycle.TransitionError, match="chat: nothing to roll back to 'r1'"):
            lifecycle.manual_rollback(s, spec, "api:alice", "back", "r1", T0)
        d = lifecycle.manual_rollback(s, spec, "api:alice", "regression", None, T0)
        assert (d.kind, d.inputs, spec.stable_revision) == ("rollback", {"to": "r0"}, "r0")
        actions = owed(s)[1:]
    who = {"speculator": "chat", "namespace": "team-a"}
    assert actions == [
        AbortCanary(**who, revision="r1", reason="not now"),
        Rollback(**who, revision="r1", to_revision="r0", reason="regression", artifact_uri=None, sha256=None),
    ]


def test_a_canary_promoted_by_hand_at_once_is_still_guarded(factory: sessionmaker[Session]) -> None:
    """No stable traffic since the canary started: the guard holds it against the stable's last figure."""
    with factory() as s, s.begin():
        spec = chat(s)
        spec.acceptance_rate = 0.46
        lifecycle.manual_promote(s, spec, "api:alice", "try r1", "r1", T0)
        d = lifecycle.manual_promote(
            s, spec, "api:alice", "skip the analysis", None, T0 + timedelta(seconds=8)
        )
        assert d.kind == "promote" and spec.phase == "guard"
        guard = load_state(spec).guard
        assert guard is not None and (guard.previous_revision, guard.previous_acceptance) == ("r0", 0.46)
