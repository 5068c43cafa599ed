"""One evaluation step of a speculator's lifecycle: steady -> adapting -> canary -> guard -> steady.

The policies decide; this module turns their decisions into state changes, audit records and pending
actions, all inside the caller's transaction (so a decision and its effects commit together or not at all).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .config import Policies
from .ledger import record, revision_row, set_phase, window
from .policies import adaptation, canary, drift, guard
from .policies.decision import Decision
from .store.models import AdaptationRun, DriftEvent, Speculator

POLICY = "policy"


@dataclass(frozen=True)
class StepContext:
    """What a step needs besides the speculator: its policies and the figures window."""

    policies: Policies
    figures_window_s: float


def _state(spec: Speculator) -> dict[str, Any]:
    return dict(spec.state or {})


def _save(spec: Speculator, **parts: Any) -> None:
    state = _state(spec)
    for key, value in parts.items():
        if value is None:
            state.pop(key, None)
        elif hasattr(value, "model_dump"):
            state[key] = value.model_dump(mode="json")
        else:
            state[key] = value
    spec.state = state


def update_figures(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> None:
    """Refresh the latest observed figures of the stable revision (for the API and the CR status)."""
    since = now - timedelta(seconds=ctx.figures_window_s)
    w = window(s, spec.id, "stable", spec.stable_revision, since, now)
    if w.draft_tokens > 0:
        spec.acceptance_rate = w.acceptance_rate
        spec.mean_accepted_length = w.mean_accepted_length
        spec.tokens_per_second = w.generated / ctx.figures_window_s


def status_figures(spec: Speculator) -> dict[str, Any]:
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
    if spec.phase == "steady":
        return _steady(s, spec, ctx, now)
    if spec.phase == "adapting":
        return _adapting(s, spec, now)
    if spec.phase == "canary":
        return _canary(s, spec, ctx, now)
    if spec.phase == "guard":
        return _guard(s, spec, ctx, now)
    return []  # paused: a person decides


def _steady(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> list[Decision]:
    out: list[Decision] = []
    state = _state(spec)
    stable = spec.stable_revision or ""
    ds = drift.DriftState.model_validate(state["drift"]) if "drift" in state else drift.reset_for(stable, now)
    if ds.revision != stable:
        ds = drift.reset_for(stable, now)
    w = window(s, spec.id, "stable", stable, ds.since, now)
    d, ds = drift.decide(w, ctx.policies.drift, ds, now)
    drift_pending = bool(state.get("drift_pending", False))
    if d.kind == "drift":
        drift_pending = True
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
        drift_pending = False
        record(s, spec, d, POLICY, now, revision=stable)
        out.append(d)
    _save(spec, drift=ds, drift_pending=drift_pending)

    in_flight = AdaptationRun.status.in_(("requested", "running"))
    running_fleet = s.execute(select(func.count()).select_from(AdaptationRun).where(in_flight)).scalar_one()
    obs = adaptation.AdaptationObservation(
        drift_pending=drift_pending,
        schedule_due=bool(state.get("schedule_due", False)),
        running_fleet=int(running_fleet),
    )
    ast = adaptation.AdaptationState.model_validate(state.get("adaptation", {}))
    d, ast = adaptation.decide(obs, ctx.policies.adaptation, ast, now)
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
        _save(spec, adaptation=ast, drift_pending=False, schedule_due=False, run_id=run_id)
        d = d.model_copy(update={"inputs": {**d.inputs, "run_id": run_id}})
        action = ("start_adaptation", {"run_id": run_id, "parent": stable})
        record(s, spec, d, POLICY, now, revision=stable, action=action)
        out.append(d)
    return out


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) else None


def _adapting(s: Session, spec: Speculator, now: datetime) -> list[Decision]:
    run_id = _state(spec).get("run_id")
    run = s.execute(select(AdaptationRun).where(AdaptationRun.run_id == run_id)).scalar_one_or_none()
    if run is None or run.status == "failed":
        spec.phase = "steady"
        _save(spec, run_id=None)
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
    _save(
        spec,
        run_id=None,
        canary=canary.CanaryState(revision=revision, since=now),
        canary_started=now.isoformat(),
    )
    payload = {
        "revision": revision,
        "artifact_uri": row.artifact_uri if row else None,
        "sha256": row.sha256 if row else None,
        "parent": spec.stable_revision,
    }
    record(s, spec, d, actor, now, revision=revision, action=("start_canary", payload))
    return [d]


def _canary(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> list[Decision]:
    state = _state(spec)
    cs = canary.CanaryState.model_validate(state["canary"])
    obs = canary.CanaryObservation(
        canary=window(s, spec.id, "canary", cs.revision, cs.since, now),
        stable=window(s, spec.id, "stable", spec.stable_revision, cs.since, now),
    )
    d, cs = canary.decide(obs, ctx.policies.canary, cs, now)
    _save(spec, canary=cs)
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
        raise ValueError(f"speculator {spec.name}: no canary to promote")
    started = _state(spec).get("canary_started")
    since = datetime.fromisoformat(started) if started else None
    prev_acc = window(s, spec.id, "stable", previous, since, now).acceptance_rate
    spec.stable_revision, spec.canary_revision = revision, None
    set_phase(s, spec, revision, "Promoted", d.reason, now)
    set_phase(s, spec, previous, "Superseded", f"superseded by {revision}", now)
    row = revision_row(s, spec, revision)
    if prev_acc is not None and previous is not None:
        gs = guard.GuardState(
            revision=revision, previous_revision=previous, previous_acceptance=prev_acc, promoted_at=now
        )
        spec.phase = "guard"
        _save(spec, canary=None, canary_started=None, guard=gs, drift=None)
    else:
        spec.phase = "steady"
        _save(spec, canary=None, canary_started=None, drift=None)
    payload = {
        "revision": revision,
        "previous": previous,
        "artifact_uri": row.artifact_uri if row else None,
        "sha256": row.sha256 if row else None,
    }
    record(s, spec, d, actor, now, revision=revision, action=("promote", payload))
    return [d]


def reject(s: Session, spec: Speculator, d: Decision, actor: str, now: datetime) -> list[Decision]:
    """Abort the canary: its revision is Rejected, the stable one keeps serving."""
    revision = spec.canary_revision
    if revision is None:
        raise ValueError(f"speculator {spec.name}: no canary to abort")
    spec.canary_revision = None
    spec.phase, spec.paused_from = "steady", None
    set_phase(s, spec, revision, "Rejected", d.reason, now)
    _save(spec, canary=None, canary_started=None)
    payload = {"revision": revision, "reason": d.reason}
    record(s, spec, d, actor, now, revision=revision, action=("abort_canary", payload))
    return [d]


def _guard(s: Session, spec: Speculator, ctx: StepContext, now: datetime) -> list[Decision]:
    gs = guard.GuardState.model_validate(_state(spec)["guard"])
    w = window(s, spec.id, "stable", gs.revision, gs.promoted_at, now)
    d, gs = guard.decide(w, ctx.policies.guard, gs, now)
    if d.kind == "rollback":
        return rollback(s, spec, d, POLICY, gs.previous_revision, now)
    if d.kind == "guard_passed":
        spec.phase = "steady"
        _save(spec, guard=None)
        record(s, spec, d, POLICY, now, revision=gs.revision)
        return [d]
    return []


def rollback(
    s: Session, spec: Speculator, d: Decision, actor: str, to_revision: str, now: datetime
) -> list[Decision]:
    """Serve `to_revision` again; the current stable revision is RolledBack."""
    revision = spec.stable_revision
    if revision is None or revision == to_revision:
        raise ValueError(f"speculator {spec.name}: nothing to roll back to {to_revision!r}")
    spec.stable_revision = to_revision
    spec.phase, spec.paused_from = "steady", None
    set_phase(s, spec, revision, "RolledBack", d.reason, now)
    set_phase(s, spec, to_revision, "Promoted", f"rollback from {revision}", now)
    row = revision_row(s, spec, to_revision)
    _save(spec, guard=None, drift=None, drift_pending=False)
    payload = {
        "revision": revision,
        "to_revision": to_revision,
        "reason": d.reason,
        "artifact_uri": row.artifact_uri if row else None,
        "sha256": row.sha256 if row else None,
    }
    record(s, spec, d, actor, now, revision=revision, action=("rollback", payload))
    return [d]
