"""Typed actions: every kind through record -> stored payload -> parse_action -> execute, the payloads older
code stored, and stored actions that are not one (failed once, never retried)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from adaspec.controlplane.actions import (
    AbortCanary,
    ActionModel,
    InvalidActionError,
    Promote,
    Rollback,
    StartAdaptation,
    StartCanary,
    parse_action,
)
from adaspec.controlplane.actuators import PermanentActionError, RunStatus, execute
from adaspec.controlplane.config import Settings
from adaspec.controlplane.ledger import record
from adaspec.controlplane.policies.decision import Decision
from adaspec.controlplane.service import ControlPlane
from adaspec.controlplane.store.models import Action, AdaptationRun, DecisionRecord, Speculator

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "ab" * 32
WHO = {"speculator": "chat", "namespace": "team-a"}


@dataclass
class Recorder:
    """An actuator that records each call (method name and arguments) and changes nothing."""

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # methods that raise PermanentActionError

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.refuse:
            raise PermanentActionError(f"{name}: refused by the test")

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None:
        self._call("report_status", speculator, namespace, figures)

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None:
        self._call("start_adaptation", speculator, namespace, run_id, parent)

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus:
        return RunStatus(status="unknown")

    def start_canary(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        parent: str | None,
        sha256: str | None = None,
    ) -> None:
        self._call("start_canary", speculator, namespace, revision, artifact_uri, parent, sha256)

    def promote(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        previous: str | None,
        sha256: str | None = None,
    ) -> None:
        self._call("promote", speculator, namespace, revision, artifact_uri, previous, sha256)

    def abort_canary(self, speculator: str, namespace: str, revision: str, reason: str) -> None:
        self._call("abort_canary", speculator, namespace, revision, reason)

    def rollback(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        to_revision: str,
        artifact_uri: str | None,
        reason: str,
        sha256: str | None = None,
    ) -> None:
        self._call("rollback", speculator, namespace, revision, to_revision, artifact_uri, reason, sha256)


# (action, the payload stored for it: the keys the store has always held, the call it makes)
CASES: list[tuple[ActionModel, dict[str, Any], tuple[str, tuple[Any, ...]]]] = [
    (
        StartAdaptation(**WHO, run_id="chat-run1", parent="r4"),
        {**WHO, "run_id": "chat-run1", "parent": "r4"},
        ("start_adaptation", ("chat", "team-a", "chat-run1", "r4")),
    ),
    (
        StartCanary(**WHO, revision="r5", artifact_uri="file:///r5", sha256=SHA, parent="r4"),
        {**WHO, "revision": "r5", "artifact_uri": "file:///r5", "sha256": SHA, "parent": "r4"},
        ("start_canary", ("chat", "team-a", "r5", "file:///r5", "r4", SHA)),
    ),
    (
        Promote(**WHO, revision="r5", previous="r4", artifact_uri="file:///r5", sha256=SHA),
        {**WHO, "revision": "r5", "previous": "r4", "artifact_uri": "file:///r5", "sha256": SHA},
        ("promote", ("chat", "team-a", "r5", "file:///r5", "r4", SHA)),
    ),
    (
        AbortCanary(**WHO, revision="r5", reason="canary failed its analysis"),
        {**WHO, "revision": "r5", "reason": "canary failed its analysis"},
        ("abort_canary", ("chat", "team-a", "r5", "canary failed its analysis")),
    ),
    (
        Rollback(**WHO, revision="r5", to_revision="r4", reason="regression", artifact_uri=None, sha256=None),
        {
            **WHO,
            "revision": "r5",
            "to_revision": "r4",
            "reason": "regression",
            "artifact_uri": None,
            "sha256": None,
        },
        ("rollback", ("chat", "team-a", "r5", "r4", None, "regression", None)),
    ),
]


def speculator(s: Session) -> Speculator:
    spec = Speculator(name="chat", namespace="team-a", phase="steady", stable_revision="r4", updated_at=T0)
    s.add(spec)
    s.flush()
    return spec


@pytest.mark.parametrize(("action", "payload", "call"), CASES, ids=[c[0].kind for c in CASES])
def test_every_action_round_trips_through_the_store(
    factory: sessionmaker[Session],
    action: ActionModel,
    payload: dict[str, Any],
    call: tuple[str, tuple[Any, ...]],
) -> None:
    with factory() as s, s.begin():
        spec = speculator(s)
        record(s, spec, Decision(kind="none", reason="test"), "policy", T0, action=action)
    with factory() as s:
        row = s.execute(select(Action)).scalar_one()
    assert (row.kind, row.payload, row.status) == (action.kind, payload, "pending")
    parsed = parse_action(row.kind, row.payload)
    assert parsed == action and type(parsed) is type(action)
    recorder = Recorder()
    execute(recorder, parsed)
    assert recorder.calls == [call]


def test_an_action_for_another_speculator_is_not_recorded(factory: sessionmaker[Session]) -> None:
    with factory() as s, s.begin():
        spec = speculator(s)
        other = AbortCanary(speculator="chat", namespace="team-b", revision="r5")
        with pytest.raises(ValueError, match="abort_canary: for team-b/chat, recorded on team-a/chat"):
            record(s, spec, Decision(kind="reject", reason="x"), "policy", T0, action=other)


@pytest.mark.parametrize(
    ("kind", "payload"),
    [  # as code before sha256 stored them
        ("start_canary", {**WHO, "revision": "r5", "artifact_uri": "file:///r5", "parent": "r4"}),
        ("promote", {**WHO, "revision": "r5", "previous": "r4", "artifact_uri": "file:///r5"}),
        ("rollback", {**WHO, "revision": "r5", "to_revision": "r4", "reason": "x", "artifact_uri": None}),
    ],
)
def test_payloads_without_sha256_parse(kind: str, payload: dict[str, Any]) -> None:
    action = parse_action(kind, payload)
    assert isinstance(action, StartCanary | Promote | Rollback)
    assert (action.kind, action.speculator, action.revision, action.sha256) == (kind, "chat", "r5", None)
    recorder = Recorder()
    execute(recorder, action)
    assert recorder.calls[0][0] == kind and recorder.calls[0][1][-1] is None  # no sha256 to check


def test_a_start_canary_payload_of_today_parses_with_its_sha256() -> None:
    payload = {**WHO, "revision": "r5", "artifact_uri": None, "sha256": None, "parent": "static"}
    assert parse_action("start_canary", payload) == StartCanary(**WHO, revision="r5", parent="static")


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        ("resize", {**WHO}, "action kind: unknown 'resize' (valid: start_adaptation, start_canary, "),
        (
            "start_canary",
            {**WHO, "artifact_uri": "file:///r5"},
            "start_canary payload: revision: Field required",
        ),
        ("promote", {**WHO, "revision": 5}, "promote payload: revision: Input should be a valid string"),
        ("rollback", {**WHO, "revision": "r5", "to_revision": "r4", "extra": 1}, "rollback payload: extra: "),
        ("abort_canary", {"revision": "r5"}, "abort_canary payload: speculator: Field required"),
    ],
)
def test_a_stored_action_that_is_not_one_is_refused_naming_why(
    kind: str, payload: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidActionError) as info:
        parse_action(kind, payload)
    assert str(info.value).startswith(message), info.value


def owe(s: Session, spec: Speculator, kind: str, payload: dict[str, Any]) -> int:
    """Store an action as any writer might have (kind and payload as given); return its id."""
    rec = DecisionRecord(speculator_id=spec.id, at=T0, kind="none", reason="test", actor="test", inputs={})
    s.add(rec)
    s.flush()
    row = Action(decision_id=rec.id, speculator_id=spec.id, kind=kind, payload=payload, created_at=T0)
    s.add(row)
    s.flush()
    return row.id


def test_an_unknown_kind_is_failed_once_and_never_retried(factory: sessionmaker[Session]) -> None:
    with factory() as s, s.begin():
        spec = speculator(s)
        unknown = owe(s, spec, "resize", {**WHO, "replicas": 3})
        bad = owe(s, spec, "start_canary", {**WHO})
        good = owe(s, spec, "abort_canary", {**WHO, "revision": "r5", "reason": "x"})
    recorder = Recorder()
    cp = ControlPlane(Settings(), factory, recorder)
    assert cp.run_actions(T0) == 1
    assert cp.run_actions(T0) == 0  # nothing pending is left: the failed ones are not tried again
    with factory() as s:
        rows = {a.id: a for a in s.execute(select(Action)).scalars()}
    assert (rows[unknown].status, rows[unknown].attempts) == ("failed", 1)
    assert "action kind: unknown 'resize'" in (rows[unknown].last_error or "")
    assert (rows[bad].status, rows[bad].attempts) == ("failed", 1)
    assert "start_canary payload: revision: Field required" in (rows[bad].last_error or "")
    assert (rows[good].status, rows[good].attempts) == ("done", 1)
    assert recorder.calls == [("abort_canary", ("chat", "team-a", "r5", "x"))]
    assert cp.telemetry.actions.labels("resize", "failed")._value.get() == 1


def test_a_refused_start_adaptation_fails_its_run(factory: sessionmaker[Session]) -> None:
    with factory() as s, s.begin():
        spec = speculator(s)
        s.add(
            AdaptationRun(
                run_id="chat-run1",
                speculator_id=spec.id,
                trigger="drift",
                status="running",
                parent_revision="r4",
                created_at=T0,
                message="",
            )
        )
        owe(s, spec, "start_adaptation", {**WHO, "run_id": "chat-run1", "parent": "r4"})
    cp = ControlPlane(Settings(), factory, Recorder(refuse={"start_adaptation"}))
    assert cp.run_actions(T0) == 0
    with factory() as s:
        run = s.execute(select(AdaptationRun)).scalar_one()
        failed = s.execute(
            select(DecisionRecord).where(DecisionRecord.kind == "adaptation_failed")
        ).scalar_one()
    assert (run.status, run.message) == ("failed", "not started: start_adaptation: refused by the test")
    assert failed.inputs == {"run_id": "chat-run1", "parent": "r4"}
