"""Carries one AdaptiveSpeculator to its desired children and status (I/O around the pure builders)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from adaspec.operator import builders
from adaspec.operator.builders import STATIC_REVISION, Artifact, Owner
from adaspec.operator.kube import Kube
from adaspec.operator.models import AdaptiveSpeculatorSpec, revision_object_name
from adaspec.operator.status import Rollout, compute_status, status_patch

Notify = Callable[[str, str, str], None]  # (type Normal|Warning, reason, message) -> posts an Event


ENDED_PHASES = ("Rejected", "RolledBack")  # revision phases that must not serve traffic as a canary


class RevisionMissing(Exception):
    """A revision named in status or spec has no SpeculatorRevision object (yet)."""


def now_rfc3339() -> str:
    """Return the current UTC time in RFC 3339 with second precision."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def revisions(spec: AdaptiveSpeculatorSpec, status: Mapping[str, Any]) -> tuple[str, str | None]:
    """Return (stable, canary) revision ids: pinnedRevision overrides promotion and suppresses canaries."""
    if spec.pinned_revision:
        return spec.pinned_revision, None
    stable = status.get("stableRevision") or STATIC_REVISION
    return stable, status.get("canaryRevision") or None


def resolve_artifact(kube: Kube, owner: Owner, spec: AdaptiveSpeculatorSpec, revision: str) -> Artifact:
    """Return the artifact of a revision (SpeculatorRevisions). `static` has none: the runtime loads
    spec.staticDraft from `--static-draft` and starts its adaptive draft from it (`--draft-artifact` names
    a revision directory with a manifest, which a static draft is not)."""
    if revision == STATIC_REVISION:
        return Artifact(revision=revision, uri="")
    name = revision_object_name(owner.name, revision)
    obj = kube.get("SpeculatorRevision", owner.namespace, name)
    if obj is None:
        raise RevisionMissing(f"SpeculatorRevision {name} not found")
    rspec = obj.get("spec", {})
    phase = (obj.get("status") or {}).get("phase", "")
    return Artifact(revision, uri=rspec.get("artifactUri", ""), sha256=rspec.get("sha256", ""), phase=phase)


@dataclass(frozen=True)
class Resolved:
    """The revisions to serve, as far as their SpeculatorRevisions allow."""

    stable_revision: str
    stable: Artifact | None  # None when the stable revision's object is missing: change nothing
    canary_revision: str | None  # None when unset, missing, Rejected or RolledBack
    canary: Artifact | None
    problem: str | None  # why the speculator is Degraded, if it is


def resolve(kube: Kube, owner: Owner, spec: AdaptiveSpeculatorSpec, status: Mapping[str, Any]) -> Resolved:
    """Return the stable and canary artifacts to serve; a missing revision is a problem, not an error."""
    stable_rev, canary_rev = revisions(spec, status)
    problems: list[str] = []
    try:
        stable: Artifact | None = resolve_artifact(kube, owner, spec, stable_rev)
    except RevisionMissing as exc:
        stable = None
        problems.append(str(exc))
    canary: Artifact | None = None
    if canary_rev:
        try:
            canary = resolve_artifact(kube, owner, spec, canary_rev)
        except RevisionMissing as exc:
            problems.append(str(exc))
        if canary is None or canary.phase in ENDED_PHASES:
            # Rejected or rolled back: never serve it, even before the status says so.
            canary, canary_rev = None, None
    return Resolved(stable_rev, stable, canary_rev, canary, "; ".join(problems) or None)


@dataclass
class Outcome:
    """What one reconciliation did."""

    actions: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def reconcile(kube: Kube, body: Mapping[str, Any], notify: Notify) -> Outcome:
    """Apply the children the speculator should have, delete the canary it should not, refresh status."""
    owner = Owner.from_body(body)
    spec = AdaptiveSpeculatorSpec.model_validate(body["spec"])
    resolved = resolve(kube, owner, spec, body.get("status") or {})
    outcome = Outcome()
    if resolved.problem:
        notify("Warning", "RevisionMissing", resolved.problem)
    if not spec.paused and resolved.stable is not None:
        plan = builders.plan_children(
            owner,
            spec,
            resolved.stable,
            resolved.canary,
            servicemonitor=kube.has_api_group("monitoring.coreos.com/v1"),
        )
        for obj in plan.apply:
            result = kube.apply(obj)
            if result != "unchanged":
                action = f"{result} {obj['kind']} {obj['metadata']['name']}"
                outcome.actions.append(action)
                notify("Normal", result.capitalize(), action)
        for name in plan.delete_deployments:
            if kube.delete("Deployment", owner.namespace, name):
                action = f"deleted Deployment {name}"
                outcome.actions.append(action)
                notify("Normal", "Deleted", action)
    outcome.status = refresh_status(kube, body, spec, resolved)
    return outcome


def refresh_status(
    kube: Kube, body: Mapping[str, Any], spec: AdaptiveSpeculatorSpec, resolved: Resolved | None = None
) -> dict[str, Any]:
    """Read the Deployments, compute status, patch what changed; return the patch (empty if none)."""
    owner = Owner.from_body(body)
    old: Mapping[str, Any] = body.get("status") or {}
    if resolved is None:
        resolved = resolve(kube, owner, spec, old)
    stable_dep = kube.get("Deployment", owner.namespace, builders.deployment_name(owner, "stable"))
    canary_dep = kube.get("Deployment", owner.namespace, builders.deployment_name(owner, "canary"))
    new = compute_status(
        generation=int(body["metadata"].get("generation", 0)),
        paused=spec.paused,
        stable_revision=resolved.stable_revision,
        canary_revision=resolved.canary_revision,
        stable=Rollout.from_deployment(stable_dep) if stable_dep else None,
        canary=Rollout.from_deployment(canary_dep) if canary_dep and resolved.canary_revision else None,
        old_conditions=old.get("conditions") or [],
        selector=builders.selector_string(builders.role_selector(owner, "stable")),
        now=now_rfc3339(),
        problem=resolved.problem,
    )
    patch = status_patch(old, new)
    version = str(body["metadata"].get("resourceVersion", ""))
    if patch and not kube.patch_status("AdaptiveSpeculator", owner.namespace, owner.name, patch, version):
        return {}  # changed since it was read: the change's own event reconciles again
    return patch
