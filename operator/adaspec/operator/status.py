"""Pure computation of an AdaptiveSpeculator's status (phase, conditions, replicas) from its children."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adaspec.operator.models import Phase

OPERATOR_CONDITIONS = ("Ready", "Canary", "Degraded")  # Adapting belongs to the control plane


@dataclass(frozen=True)
class Rollout:
    """What a Deployment reports about its rollout."""

    desired: int
    replicas: int
    updated: int
    ready: int
    available: int
    current: bool  # the controller has observed the latest spec
    failed_reason: str | None  # ProgressDeadlineExceeded or ReplicaFailure, else None

    @property
    def complete(self) -> bool:
        """Return True when every pod runs the latest template and is available."""
        d = self.desired
        return self.current and self.updated == d and self.replicas == d and self.available == d

    @classmethod
    def from_deployment(cls, dep: Mapping[str, Any]) -> Rollout:
        """Return the rollout state of a Deployment object (as returned by the API, camelCase)."""
        meta, spec, st = dep.get("metadata", {}), dep.get("spec", {}), dep.get("status") or {}
        failed: str | None = None
        for cond in st.get("conditions") or []:
            if cond.get("type") == "Progressing" and cond.get("status") == "False":
                failed = cond.get("reason") or "ProgressDeadlineExceeded"
            if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
                failed = cond.get("reason") or "ReplicaFailure"
        return cls(
            desired=int(spec.get("replicas", 1)),
            replicas=int(st.get("replicas") or 0),
            updated=int(st.get("updatedReplicas") or 0),
            ready=int(st.get("readyReplicas") or 0),
            available=int(st.get("availableReplicas") or 0),
            current=int(st.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
            failed_reason=failed,
        )


def _condition(ctype: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": ctype,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Return `new` merged over `old` by type; lastTransitionTime changes only when status does."""
    by_type = {c["type"]: dict(c) for c in old}
    for cond in new:
        prev = by_type.get(cond["type"])
        merged = dict(cond)
        if prev is not None and prev.get("status") == cond["status"] and prev.get("lastTransitionTime"):
            merged["lastTransitionTime"] = prev["lastTransitionTime"]
        else:
            merged["lastTransitionTime"] = now
        by_type[cond["type"]] = merged
    order = ["Ready", "Adapting", "Canary", "Degraded"]
    return sorted(
        by_type.values(), key=lambda c: (order.index(c["type"]) if c["type"] in order else 9, c["type"])
    )


def compute_status(
    *,
    generation: int,
    paused: bool,
    stable_revision: str,
    canary_revision: str | None,
    stable: Rollout | None,
    canary: Rollout | None,
    old_conditions: Sequence[Mapping[str, Any]],
    selector: str,
    now: str,
    problem: str | None = None,
) -> dict[str, Any]:
    """Return the operator-owned status fields for the observed children.

    The phase is, in order of precedence: Paused, Degraded (a rollout failed or a revision is missing),
    Canary (a canary revision is set), Ready (the stable rollout is complete), Progressing (a rollout is
    under way), Pending (no stable Deployment yet).
    """
    ready = stable is not None and stable.complete
    failed = [r.failed_reason for r in (stable, canary) if r is not None and r.failed_reason]
    if stable is None:
        ready_cond = _condition("Ready", False, "Pending", "stable Deployment not created yet", generation)
    elif ready:
        msg = f"{stable.ready}/{stable.desired} runtime pods ready on revision {stable_revision}"
        ready_cond = _condition("Ready", True, "RolloutComplete", msg, generation)
    else:
        msg = f"{stable.updated}/{stable.desired} pods updated, {stable.available} available"
        ready_cond = _condition("Ready", False, "RolloutInProgress", msg, generation)
    if canary_revision:
        canary_ready = canary is not None and canary.complete
        reason = "CanaryReady" if canary_ready else "CanaryProgressing"
        msg = f"canary serves revision {canary_revision}"
        canary_cond = _condition("Canary", True, reason, msg, generation)
    else:
        canary_cond = _condition("Canary", False, "NoCanary", "no canary revision", generation)
    if problem:
        degraded = _condition("Degraded", True, "RevisionMissing", problem, generation)
    elif failed:
        degraded = _condition("Degraded", True, failed[0], "a runtime rollout failed", generation)
    else:
        degraded = _condition("Degraded", False, "AsExpected", "no failed rollout", generation)

    phase: Phase
    if paused:
        phase, message = "Paused", "spec.paused is set: children are not changed"
    elif failed or problem:
        phase, message = "Degraded", str(degraded["message"])
    elif canary_revision:
        phase, message = "Canary", str(canary_cond["message"])
    elif ready:
        phase, message = "Ready", str(ready_cond["message"])
    elif stable is not None:
        phase, message = "Progressing", str(ready_cond["message"])
    else:
        phase, message = "Pending", str(ready_cond["message"])

    return {
        "phase": phase,
        "message": message,
        "observedGeneration": generation,
        "stableRevision": stable_revision,
        "replicas": stable.replicas if stable is not None else 0,
        "readyReplicas": stable.ready if stable is not None else 0,
        "canaryReadyReplicas": canary.ready if canary is not None else 0,
        "selector": selector,
        "conditions": merge_conditions(old_conditions, [ready_cond, canary_cond, degraded], now),
    }


def status_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Return the keys of `new` whose values differ from `old` (empty when nothing changed)."""
    return {k: v for k, v in new.items() if old.get(k) != v}
