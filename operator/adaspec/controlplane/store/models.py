"""SQLAlchemy 2 models of the control plane's store (schema owned by the Alembic migrations)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from adaspec.operator.models import RevisionPhase as RevisionPhaseName

from ..state import SpeculatorPhase


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset: stored naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass timezone-aware UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Speculator(Base):
    """A speculator of the fleet: lifecycle phase, revisions in service, policy states, latest figures."""

    __tablename__ = "speculators"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    namespace: Mapped[str] = mapped_column(String(200), default="default")
    phase: Mapped[SpeculatorPhase] = mapped_column(String(20), default="steady")
    paused_from: Mapped[SpeculatorPhase | None] = mapped_column(String(20))
    stable_revision: Mapped[str | None] = mapped_column(String(200))
    canary_revision: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    acceptance_rate: Mapped[float | None] = mapped_column(Float)
    mean_accepted_length: Mapped[float | None] = mapped_column(Float)
    tokens_per_second: Mapped[float | None] = mapped_column(Float)
    last_drift_at: Mapped[datetime | None]
    last_adaptation_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class Revision(Base):
    """A speculator revision (draft weights) and its current phase (CONTRACTS: SpeculatorRevision)."""

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("speculator_id", "revision"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    speculator_id: Mapped[int] = mapped_column(ForeignKey("speculators.id"), index=True)
    revision: Mapped[str] = mapped_column(String(200))
    parent: Mapped[str | None] = mapped_column(String(200))
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    offline_metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    phase: Mapped[RevisionPhaseName] = mapped_column(String(20))
    created_at: Mapped[datetime]


class RevisionPhase(Base):
    """Phase history of a revision."""

    __tablename__ = "revision_phases"
    id: Mapped[int] = mapped_column(primary_key=True)
    revision_id: Mapped[int] = mapped_column(ForeignKey("revisions.id"), index=True)
    phase: Mapped[RevisionPhaseName] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]


class ScrapeTarget(Base):
    """A pod's metrics endpoint: the last cumulative counters (base line for deltas) and its errors."""

    __tablename__ = "scrape_targets"
    __table_args__ = (UniqueConstraint("speculator_id", "url"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    speculator_id: Mapped[int] = mapped_column(ForeignKey("speculators.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    last_counters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_revision: Mapped[str | None] = mapped_column(String(200))
    last_role: Mapped[str | None] = mapped_column(String(20))
    last_ok_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    errors: Mapped[int] = mapped_column(Integer, default=0)


class MetricSample(Base):
    """Counters gained by one pod between two scrapes, by revision and role (stable or canary)."""

    __tablename__ = "metric_samples"
    __table_args__ = (Index("ix_metric_samples_speculator_ts", "speculator_id", "ts"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    speculator_id: Mapped[int] = mapped_column(ForeignKey("speculators.id"))
    revision: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    target: Mapped[str] = mapped_column(Text)
    ts: Mapped[datetime]
    interval_s: Mapped[float] = mapped_column(Float)
    drafts: Mapped[float] = mapped_column(Float)
    draft_tokens: Mapped[float] = mapped_column(Float)
    accepted: Mapped[float] = mapped_column(Float)
    per_position: Mapped[list[Any]] = mapped_column(default=list)
    generated: Mapped[float] = mapped_column(Float)
    tokens_per_s: Mapped[float | None] = mapped_column(Float)


class DriftEvent(Base):
    """A drift detected on a stable revision."""

    __tablename__ = "drift_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    speculator_id: Mapped[int] = mapped_column(ForeignKey("speculators.id"), index=True)
    revision: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime]
    value: Mapped[float | None] = mapped_column(Float)
    reference: Mapped[float | None] = mapped_column(Float)
    statistic: Mapped[float | None] = mapped_column(Float)


class AdaptationRun(Base):
    """One re-training run: requested -> running -> succeeded (candidate) | failed."""

    __tablename__ = "adaptation_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[str] = mapped_column(String(200), unique=True)
    speculator_id: Mapped[int] = mapped_column(ForeignKey("speculators.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    parent_revision: Mapped[str | None] = mapped_column(String(200))
    candidate_revision: Mapped[str | None] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class DecisionRecord(Base):
    """The audit log: every decision, who made it (a policy or a person) and the inputs it saw."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_speculator_at", "speculator_id", "at"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    speculator_id: Mapped[int | None] = mapped_column(ForeignKey("speculators.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(30))
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(200))
    revision: Mapped[str | None] = mapped_column(String(200))
    inputs: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Action(Base):
    """An actuation owed for a decision; written with the decision, marked done once carried out."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(primary_key=True)
    decision_id: Mapped[int] = mapped_column(ForeignKey("decisions.id"), unique=True)
    speculator_id: Mapped[int] = mapped_column(ForeignKey("speculators.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    done_at: Mapped[datetime | None]


class Lease(Base):
    """A named lease (leader election between replicas)."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime]
