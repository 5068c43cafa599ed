"""A speculator's lifecycle: steady -> adapting -> canary -> guard -> steady, and paused by a person.

The policies decide; this module turns their decisions, and a person's (promote, rollback, pause, resume),
into state changes, audit records and pending actions, all inside the caller's transaction (so a
decision and its effects commit together or not at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .actions import AbortCanary, Promote, Rollback, StartAdaptation, StartCanary
from .config import Policies
from .ledger import record, revision_row, set_phase, window
from .policies import adaptation, canary, drift, guard
from .policies.decision import Decision
from .state import load_state, save_state
from .store.models import AdaptationRun, DriftEvent, Speculator

POLICY = "policy"
Figures = dict[str, float | str | None]


class TransitionError(ValueError):
    """A transition that does not fit the speculator's phase (the API answers 409)."""


class UnknownRevision(LookupError):
    """A transition names a revision the speculator does not have (the API answers 404)."""


@dataclass(frozen=True)
class StepContext:
    """What a step needs besides the speculator: its policies and the figures window."""

    policies: Policies
    figures_window_s: float


def update_figures(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> None:
    """Refresh the latest observed figures of the stable revision (for the API and the CR status)."""
    since = now - timedelta(seconds=ctx.figures_window_s)
    w = window(s, spec.id, "stable", spec.stable_revision, since, now)
    if w.draft_tokens > 0:
        spec.acceptance_rate = w.acceptance_rate
        spec.mean_accepted_length = w.mean_accepted_length
        spec.tokens_per_second = w.generated / ctx.figures_window_s


def status_figures(spec: Speculator) -> Figures:
    """Return the latest figures of `spec` under the CR status keys (times as RFC 3339)."""
    return {
        "acceptanceRate": spec.acceptance_rate,
        "meanAcceptedLength": spec.mean_accepted_length,
        "tokensPerSecond": spec.tokens_per_second,
        "lastDriftTime": spec.last_drift_at.isoformat().replace("+00:00", "Z")
        if spec.last_drift_at
        else None,
        "lastAdaptationTime": (
            spec.last_adaptation_at.isoformat().replace("+00:00", "Z") if spec.last_adaptation_at else None
        ),
    }


def step(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> list[Decision]:
    """Evaluate `spec` once at `now`; return the decisions recorded (none when nothing changed)."""
    update_figures(s, spec, ctx, now)
    match spec.phase:
        case "steady":
            return _steady(s, spec, ctx, now)
        case "adapting":
            return _adapting(s, spec, now)
        case "canary":
            return _canary(s, spec, ctx, now)
        case "guard":
            return _guard(s, spec, ctx, now)
        case "paused":
            return []  # a person decides
        case _:
            assert_never(spec.phase)


def _steady(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> list[Decision]:
    out: list[Decision] = []
    st = load_state(spec)
    stable = spec.stable_revision or ""
    ds = st.drift if st.drift is not None and st.drift.revision == stable else drift.reset_for(stable, now)
    w = window(s, spec.id, "stable", stable, ds.since, now)
    d, ds = drift.decide(w, ctx.policies.drift, ds, now)
    if d.kind == "drift":
        st.drift_pending = True
        spec.last_drift_at = now
        s.add(
            DriftEvent(
                speculator_id=spec.id,
                revision=stable,
                at=now,
                value=_num(d.inputs.get("value")),
                reference=_num(d.inputs.get("reference")),
                statistic=_num(d.inputs.get("statistic")),
            )
        )
        record(s, spec, d, POLICY, now, revision=stable)
        out.append(d)
    elif d.kind == "recovered":
        st.drift_pending = False
        record(s, spec, d, POLICY, now, revision=stable)
        out.append(d)
    st.drift = ds
    save_state(spec, st)

    in_flight = AdaptationRun.status.in_(("requested", "running"))
    running_fleet = s.execute(select(func.count()).select_from(AdaptationRun).where(in_flight)).scalar_one()
    obs = adaptation.AdaptationObservation(
        drift_pending=st.drift_pending, schedule_due=st.schedule_due, running_fleet=int(running_fleet)
    )
    d, ast = adaptation.decide(obs, ctx.policies.adaptation, st.adaptation, now)
    if d.kind == "adapt":
        n = s.execute(
            select(func.count()).select_from(AdaptationRun).where(AdaptationRun.speculator_id == spec.id)
        ).scalar_one()
        run_id = f"{spec.name}-run{int(n) + 1}"
        trigger = str(d.inputs.get("trigger") or "drift")
        s.add(
            AdaptationRun(
                run_id=run_id,
                speculator_id=spec.id,
                trigger=trigger,
                status="running",
                parent_revision=stable,
                created_at=now,
                message="",
            )
        )
        spec.phase = "adapting"
        spec.last_adaptation_at = now
        st.adaptation, st.drift_pending, st.schedule_due, st.run_id = ast, False, False, run_id
        save_state(spec, st)
        d = d.model_copy(update={"inputs": {**d.inputs, "run_id": run_id}})
        action = StartAdaptation(speculator=spec.name, namespace=spec.namespace, run_id=run_id, parent=stable)
        record(s, spec, d, POLICY, now, revision=stable, action=action)
        out.append(d)
    return out


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) else None


def _adapting(s: Session, spec: Speculator, now: datetime) -> list[Decision]:
    st = load_state(spec)
    run = s.execute(select(AdaptationRun).where(AdaptationRun.run_id == st.run_id)).scalar_one_or_none()
    if run is None or run.status == "failed":
        spec.phase = "steady"
        st.run_id = None
        save_state(spec, st)
        return []
    if run.status != "succeeded" or run.candidate_revision is None:
        return []
    return start_canary(s, spec, run.candidate_revision, POLICY, f"candidate of run {run.run_id}", now)


def start_canary(
    s: Session, spec: Speculator, revision: str, actor: str, reason: str, now: datetime
) -> list[Decision]:
    """Put `revision` (a registered candidate) in canary; return the decision."""
    row = revision_row(s, spec, revision)
    d = Decision(
        kind="start_canary", reason=reason, inputs={"revision": revision, "stable": spec.stable_revision}
    )
    spec.canary_revision = revision
    spec.phase = "canary"
    set_phase(s, spec, revision, "Canary", reason, now)
    st = load_state(spec)
    st.run_id, st.canary, st.canary_started = None, canary.CanaryState(revision=revision, since=now), now
    save_state(spec, st)
    action = StartCanary(
        speculator=spec.name,
        namespace=spec.namespace,
        revision=revision,
        artifact_uri=row.artifact_uri if row else None,
        sha256=row.sha256 if row else None,
        parent=spec.stable_revision,
    )
    record(s, spec, d, actor, now, revision=revision, action=action)
    return [d]


def _canary(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> list[Decision]:
    st = load_state(spec)
    if st.canary is None:
        raise ValueError(f"speculator {spec.name}: phase canary without a canary state")
    cs = st.canary
    obs = canary.CanaryObservation(
        canary=window(s, spec.id, "canary", cs.revision, cs.since, now),
        stable=window(s, spec.id, "stable", spec.stable_revision, cs.since, now),
    )
    d, cs = canary.decide(obs, ctx.policies.canary, cs, now)
    st.canary = cs
    save_state(spec, st)
    if d.kind == "none":
        return []
    if d.kind == "promote":
        return promote(s, spec, d, POLICY, now)
    if d.kind == "reject":
        return reject(s, spec, d, POLICY, now)
    if d.kind == "pause":
        spec.paused_from, spec.phase = spec.phase, "paused"
    record(s, spec, d, POLICY, now, revision=cs.revision)
    return [d]


def promote(s: Session, spec: Speculator, d: Decision, actor: str, now: datetime) -> list[Decision]:
    """Make the canary the stable revision and guard it against the previous one."""
    revision, previous = spec.canary_revision, spec.stable_revision
    if revision is None:
        raise TransitionError(f"speculator {spec.name}: no canary to promote")
    st = load_state(spec)
    prev_acc = window(s, spec.id, "stable", previous, st.canary_started, now).acceptance_rate
    # a canary promoted before the stable served anything beside it (by hand): its latest figure
    prev_acc = spec.acceptance_rate if prev_acc is None else prev_acc
    spec.stable_revision, spec.canary_revision = revision, None
    set_phase(s, spec, revision, "Promoted", d.reason, now)
    set_phase(s, spec, previous, "Superseded", f"superseded by {revision}", now)
    row = revision_row(s, spec, revision)
    st.canary, st.canary_started, st.drift = None, None, None
    if prev_acc is not None and previous is not None:
        st.guard = guard.GuardState(
            revision=revision, previous_revision=previous, previous_acceptance=prev_acc, promoted_at=now
        )
        spec.phase = "guard"
    else:
        spec.phase = "steady"
    save_state(spec, st)
    action = Promote(
        speculator=spec.name,
        namespace=spec.namespace,
        revision=revision,
        previous=previous,
        artifact_uri=row.artifact_uri if row else None,
        sha256=row.sha256 if row else None,
    )
    record(s, spec, d, actor, now, revision=revision, action=action)
    return [d]


def reject(s: Session, spec: Speculator, d: Decision, actor: str, now: datetime) -> list[Decision]:
    """Abort the canary: its revision is Rejected, the stable one keeps serving."""
    revision = spec.canary_revision
    if revision is None:
        raise TransitionError(f"speculator {spec.name}: no canary to abort")
    spec.canary_revision = None
    spec.phase, spec.paused_from = "steady", None
    set_phase(s, spec, revision, "Rejected", d.reason, now)
    st = load_state(spec)
    st.canary, st.canary_started = None, None
    save_state(spec, st)
    action = AbortCanary(speculator=spec.name, namespace=spec.namespace, revision=revision, reason=d.reason)
    record(s, spec, d, actor, now, revision=revision, action=action)
    return [d]


def _guard(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> list[Decision]:
    st = load_state(spec)
    if st.guard is None:
        raise ValueError(f"speculator {spec.name}: phase guard without a guard state")
    gs = st.guard
    w = window(s, spec.id, "stable", gs.revision, gs.promoted_at, now)
    d, gs = guard.decide(w, ctx.policies.guard, gs, now)
    if d.kind == "rollback":
        return rollback(s, spec, d, POLICY, gs.previous_revision, now)
    if d.kind == "guard_passed":
        spec.phase = "steady"
        st.guard = None
        save_state(spec, st)
        record(s, spec, d, POLICY, now, revision=gs.revision)
        return [d]
    return []


def rollback(
    s: Session, spec: Speculator, d: Decision, actor: str, to_revision: str, now: datetime
) -> list[Decision]:
    """Serve `to_revision` again; the current stable revision is RolledBack."""
    revision = spec.stable_revision
    if revision is None or revision == to_revision:
        raise TransitionError(f"speculator {spec.name}: nothing to roll back to {to_revision!r}")
    spec.stable_revision = to_revision
    spec.phase, spec.paused_from = "steady", None
    set_phase(s, spec, revision, "RolledBack", d.reason, now)
    set_phase(s, spec, to_revision, "Promoted", f"rollback from {revision}", now)
    row = revision_row(s, spec, to_revision)
    st = load_state(spec)
    st.guard, st.drift, st.drift_pending = None, None, False
    save_state(spec, st)
    action = Rollback(
        speculator=spec.name,
        namespace=spec.namespace,
        revision=revision,
        to_revision=to_revision,
        reason=d.reason,
        artifact_uri=row.artifact_uri if row else None,
        sha256=row.sha256 if row else None,
    )
    record(s, spec, d, actor, now, revision=revision, action=action)
    return [d]


# -- a person's transitions (the API), and the pause its AdaptiveSpeculator asks for ----------------------
def manual_pause(
    s: Session, spec: Speculator, actor: str, reason: str, now: datetime, by_cr: bool = False
) -> Decision:
    """Pause `spec`: nothing is decided for it until it is resumed; return the decision.

    `by_cr`: its AdaptiveSpeculator holds it (`spec.paused` or `spec.pinnedRevision`), and only the
    resource resumes it. Raises TransitionError when it is paused already.
    """
    if spec.phase == "paused":
        raise TransitionError(f"speculator {spec.name} is already paused")
    spec.paused_from, spec.phase = spec.phase, "paused"
    if by_cr:
        st = load_state(spec)
        st.paused_by_cr = True
        save_state(spec, st)
    d = Decision(kind="pause", reason=reason, inputs={"from": spec.paused_from})
    record(s, spec, d, actor, now)
    return d


def manual_resume(
    s: Session, spec: Speculator, actor: str, reason: str, now: datetime, by_cr: bool = False
) -> Decision:
    """Resume `spec` in the phase it was paused in; return the decision.

    `by_cr`: its AdaptiveSpeculator no longer holds it (a person's pause is never resumed so). Raises
    TransitionError when it is not paused, or (`by_cr`) when a person paused it.
    """
    if spec.phase != "paused":
        raise TransitionError(f"speculator {spec.name} is not paused (phase {spec.phase})")
    st = load_state(spec)
    if by_cr and not st.paused_by_cr:
        raise TransitionError(f"speculator {spec.name}: paused by a person, not by its AdaptiveSpeculator")
    st.paused_by_cr = False
    save_state(spec, st)
    spec.phase, spec.paused_from = spec.paused_from or "steady", None
    # a resume by the resource has always been recorded without inputs (the decision log keeps its shape)
    d = Decision(kind="resume", reason=reason, inputs={} if by_cr else {"to": spec.phase})
    record(s, spec, d, actor, now)
    return d


def manual_promote(
    s: Session, spec: Speculator, actor: str, reason: str, revision: str | None, now: datetime
) -> Decision:
    """Promote the canary (`revision`, when given, must be it), or with no canary put the registered
    `revision` in canary; return the decision.

    Raises UnknownRevision for a revision `spec` does not have, TransitionError when there is nothing to
    promote.
    """
    if revision is not None and spec.canary_revision is None and spec.phase in ("steady", "paused"):
        return start_canary(s, spec, _known(s, spec, revision), actor, reason, now)[0]
    if spec.canary_revision is None or (revision is not None and revision != spec.canary_revision):
        wanted = f"canary {revision}" if revision else "canary"
        raise TransitionError(f"speculator {spec.name}: no {wanted} to promote (phase {spec.phase})")
    d = Decision(kind="promote", reason=reason, inputs={"revision": spec.canary_revision})
    return promote(s, spec, d, actor, now)[0]


def manual_rollback(
    s: Session, spec: Speculator, actor: str, reason: str, revision: str | None, now: datetime
) -> Decision:
    """Abort the canary if there is one, else serve `revision` (by default the stable one's parent)
    again; return the decision.

    Raises UnknownRevision for a revision `spec` does not have, TransitionError when there is nothing
    to roll back to.
    """
    if spec.canary_revision is not None:
        d = Decision(kind="reject", reason=reason, inputs={"revision": spec.canary_revision})
        return reject(s, spec, d, actor, now)[0]
    target = revision or _parent(s, spec)
    d = Decision(kind="rollback", reason=reason, inputs={"to": target})
    return rollback(s, spec, d, actor, _known(s, spec, target), now)[0]


def _known(s: Session, spec: Speculator, revision: str) -> str:
    if revision_row(s, spec, revision) is None:
        raise UnknownRevision(f"speculator {spec.name}: revision {revision!r} not found")
    return revision


def _parent(s: Session, spec: Speculator) -> str:
    row = revision_row(s, spec, spec.stable_revision) if spec.stable_revision is not None else None
    if row is None or row.parent is None:
        raise TransitionError(f"speculator {spec.name}: stable revision has no parent to roll back to")
    return row.parent
