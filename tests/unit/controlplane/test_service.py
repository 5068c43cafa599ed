"""ControlPlane's manual operations and an AdaptiveSpeculator's hold: the resource pauses and resumes through
the same transitions as a person, and while it holds, a person's resume, promote and rollback are refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from adaspec.controlplane.actuators import NullActuator
from adaspec.controlplane.config import Policies, Settings, SpeculatorConfig
from adaspec.controlplane.discovery import Discovered
from adaspec.controlplane.service import Conflict, ControlPlane, NotFound
from adaspec.controlplane.state import load_state
from adaspec.controlplane.store.models import DecisionRecord, Speculator
from adaspec.operator.models import AdaptiveSpeculatorSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Cluster:
    """Stands in for ClusterFleet: one AdaptiveSpeculator, `chat`, with the hold a test sets."""

    hold: str = ""
    calls: list[str] = field(default_factory=list)

    def speculators(self, fleet: Policies) -> list[Discovered]:
        spec = AdaptiveSpeculatorSpec.model_validate({"targetModel": {"uri": "file:///models/t"}})
        return [Discovered(SpeculatorConfig(name="chat", namespace="team-a", source="pods"), spec, self.hold)]


def plane(factory: sessionmaker[Session], cluster: Cluster) -> ControlPlane:
    return ControlPlane(Settings(actuator="none"), factory, NullActuator(), cluster=cluster)  # type: ignore[arg-type]


def log(factory: sessionmaker[Session]) -> list[tuple[str, str, str, object]]:
    with factory() as s:
        rows = s.execute(select(DecisionRecord).order_by(DecisionRecord.id)).scalars()
        return [(d.kind, d.actor, d.reason, d.inputs) for d in rows]


def phase(factory: sessionmaker[Session]) -> tuple[str, bool]:
    with factory() as s:
        spec = s.execute(select(Speculator)).scalar_one()
        return spec.phase, load_state(spec).paused_by_cr


def test_the_resources_hold_pauses_refuses_a_person_and_resumes(factory: sessionmaker[Session]) -> None:
    cluster = Cluster(hold="spec.paused is true")
    cp = plane(factory, cluster)
    cp.sync_fleet(T0)
    cp.sync_fleet(T0)  # already paused: nothing more recorded
    assert phase(factory) == ("paused", True)
    with pytest.raises(
        Conflict, match=r"chat is paused by its AdaptiveSpeculator \(spec.paused is true\): change"
    ):
        cp.manual("chat", "resume", "api:alice", "", None, T0)
    for op in ("promote", "rollback"):
        with pytest.raises(
            Conflict, match=r"chat: its AdaptiveSpeculator holds every change \(spec.paused is"
        ):
            cp.manual("chat", op, "api:alice", "", None, T0)
    with pytest.raises(Conflict, match="speculator chat is already paused"):
        cp.manual("chat", "pause", "api:alice", "", None, T0)
    cluster.hold = ""
    cp.sync_fleet(T0)
    assert phase(factory) == ("steady", False)
    assert log(factory) == [
        ("pause", "kubernetes", "spec.paused is true", {"from": "steady"}),
        ("resume", "kubernetes", "spec.paused and spec.pinnedRevision cleared", {}),
    ]


def test_the_resource_never_resumes_a_persons_pause(factory: sessionmaker[Session]) -> None:
    cluster = Cluster()
    cp = plane(factory, cluster)
    cp.sync_fleet(T0)
    d = cp.manual("chat", "pause", "api:alice", "", None, T0)
    assert (d.kind, d.reason) == ("pause", "manual pause")
    cp.sync_fleet(T0)
    assert phase(factory) == ("paused", False)
    cluster.hold = "spec.pinnedRevision is r3"
    cp.sync_fleet(T0)  # paused already: the resource's hold is not recorded as a second pause
    cluster.hold = ""
    cp.sync_fleet(T0)
    assert phase(factory) == ("paused", False)
    assert cp.manual("chat", "resume", "api:alice", "back", None, T0).inputs == {"to": "steady"}
    assert [(k, a) for k, a, _, _ in log(factory)] == [("pause", "api:alice"), ("resume", "api:alice")]


def test_manual_errors_keep_their_kinds(factory: sessionmaker[Session]) -> None:
    cp = plane(factory, Cluster())
    cp.sync_fleet(T0)
    with pytest.raises(NotFound, match="speculator 'nope' not found"):
        cp.manual("nope", "pause", "api:alice", "", None, T0)
    with pytest.raises(NotFound, match="speculator chat: revision 'r9' not found"):
        cp.manual("chat", "promote", "api:alice", "", "r9", T0)
    with pytest.raises(Conflict, match="chat: stable revision has no parent to roll back to"):
        cp.manual("chat", "rollback", "api:alice", "", None, T0)
    with pytest.raises(ValueError, match="op: unknown 'resize'"):
        cp.manual("chat", "resize", "api:alice", "", None, T0)
    assert log(factory) == []


def test_an_unreachable_api_server_keeps_the_fleet_as_last_seen(factory: sessionmaker[Session]) -> None:
    """A failed listing never drops speculators (nor raises out of start-up or a scrape round)."""
    cluster = Cluster()
    cp = plane(factory, cluster)
    cp.sync_fleet(T0)
    assert [c.name for c in cp.fleet()] == ["chat"]

    def down(fleet: Policies) -> list[Discovered]:
        raise ConnectionError("api server unreachable")

    cluster.speculators = down  # type: ignore[method-assign]
    cp.sync_fleet(T0)
    assert [c.name for c in cp.fleet()] == ["chat"]
