"""Writes that go together: a decision in the audit log, the action it owes, revision phase changes."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from adaspec.operator.models import RevisionPhase as RevisionPhaseName

from .actions import ActionModel
from .counters import Counters
from .policies.decision import Decision
from .store.models import (
    Action,
    DecisionRecord,
    MetricSample,
    Revision,
    RevisionPhase,
    Speculator,
    UTCDateTime,
)


def record(
    s: Session,
    spec: Speculator,
    decision: Decision,
    actor: str,
    now: datetime,
    revision: str | None = None,
    action: ActionModel | None = None,
) -> DecisionRecord:
    """Add `decision` to the audit log and, when it owes one, its pending `action` (same transaction);
    return the log's record.

    Raises ValueError when `action` names another speculator than `spec`.
    """
    if action is not None and (action.speculator, action.namespace) != (spec.name, spec.namespace):
        raise ValueError(
            f"action {action.kind}: for {action.namespace}/{action.speculator}, "
            f"recorded on {spec.namespace}/{spec.name}"
        )
    rec = DecisionRecord(
        speculator_id=spec.id,
        at=now,
        kind=decision.kind,
        reason=decision.reason,
        actor=actor,
        revision=revision,
        inputs=dict(decision.inputs),
    )
    s.add(rec)
    s.flush()
    if action is not None:
        s.add(
            Action(
                decision_id=rec.id,
                speculator_id=spec.id,
                kind=action.kind,
                payload=action.payload(),
                created_at=now,
            )
        )
    return rec


def revision_row(s: Session, spec: Speculator, revision: str) -> Revision | None:
    """Return the revision called `revision` of `spec`, or None."""
    return s.execute(
        select(Revision).where(Revision.speculator_id == spec.id, Revision.revision == revision)
    ).scalar_one_or_none()


def set_phase(
    s: Session, spec: Speculator, revision: str | None, phase: RevisionPhaseName, reason: str, now: datetime
) -> None:
    """Move a revision to `phase` and append to its phase history (unknown revisions are created)."""
    if revision is None:
        return
    row = revision_row(s, spec, revision)
    if row is None:
        row = Revision(
            speculator_id=spec.id, revision=revision, phase=phase, created_at=now, offline_metrics={}
        )
        s.add(row)
        s.flush()
    elif row.phase == phase:
        return
    row.phase = phase
    s.add(RevisionPhase(revision_id=row.id, phase=phase, reason=reason, at=now))


# Built once (immutable): constructing the expression per call costs more than running it.
_WINDOW = select(
    func.coalesce(func.sum(MetricSample.drafts), 0.0),
    func.coalesce(func.sum(MetricSample.draft_tokens), 0.0),
    func.coalesce(func.sum(MetricSample.accepted), 0.0),
    func.coalesce(func.sum(MetricSample.generated), 0.0),
).where(
    MetricSample.speculator_id == bindparam("sid"),
    MetricSample.role == bindparam("role"),
    MetricSample.revision == bindparam("revision"),
    MetricSample.ts > bindparam("since", type_=UTCDateTime()),
    MetricSample.ts <= bindparam("now", type_=UTCDateTime()),
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window(
    s: Session, spec_id: int, role: str, revision: str | None, since: datetime | None, now: datetime
) -> Counters:
    """Return the counters gained by `revision` in `role` over (since, now]."""
    if revision is None:
        return Counters()
    params = {"sid": spec_id, "role": role, "revision": revision, "since": since or EPOCH, "now": now}
    drafts, tokens, accepted, generated = s.execute(_WINDOW, params).one()
    return Counters(
        drafts=float(drafts), draft_tokens=float(tokens), accepted=float(accepted), generated=float(generated)
    )
