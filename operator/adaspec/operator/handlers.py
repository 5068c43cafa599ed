"""Kopf handlers (thin): parse, call the reconciler, post events. Importing this module registers them."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from pydantic import ValidationError

from adaspec.operator import builders
from adaspec.operator.kube import Kube
from adaspec.operator.models import GROUP, REVISIONS, SPECULATORS, VERSION, AdaptiveSpeculatorSpec
from adaspec.operator.reconcile import reconcile, refresh_status

RESYNC_SECONDS = 30.0


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in annotations (status stays as the CRD declares) and connect a client."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="adaspec.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="adaspec.dev")
    # kopf puts a finalizer on resources with timers (to stop them cleanly); name it after us.
    settings.persistence.finalizer = "adaspec.dev/operator"
    settings.posting.level = logging.INFO  # our own kopf.info/kopf.warn Events
    settings.posting.loggers = False  # but not every log line ("Handler ... succeeded") as an Event
    settings.watching.server_timeout = 300
    memo.kube = Kube.from_environment()


def _run(body: kopf.Body, memo: kopf.Memo, logger: Any) -> None:
    def notify(kind: str, reason: str, message: str) -> None:
        (kopf.warn if kind == "Warning" else kopf.info)(body, reason=reason, message=message)

    try:
        outcome = reconcile(memo.kube, body, notify)
    except ValidationError as exc:
        notify("Warning", "InvalidSpec", str(exc).splitlines()[0])
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc
    if outcome.actions or outcome.status:
        logger.info("event=reconciled actions=%s status_keys=%s", outcome.actions, sorted(outcome.status))


@kopf.on.event(GROUP, VERSION, SPECULATORS)
def speculator_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Reconcile on every change of a speculator, spec or status (the control plane drives via status)."""
    if type == "DELETED" or body.get("metadata", {}).get("deletionTimestamp"):
        return  # children are owned: the garbage collector removes them
    try:
        _run(body, memo, logger)
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        logger.warning("event=reconcile_failed error=%s", exc)


@kopf.timer(GROUP, VERSION, SPECULATORS, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Reconcile periodically, so that a failed event-driven pass is retried and drift is repaired."""
    _run(body, memo, logger)


@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={builders.NAME_LABEL: "adaspec", builders.COMPONENT_LABEL: "runtime"},
)
def runtime_deployment_changed(
    type: str | None, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any
) -> None:
    """Refresh the owning speculator's status when its Deployments roll (pods become ready)."""
    owner_name = body.get("metadata", {}).get("labels", {}).get(builders.INSTANCE_LABEL)
    namespace = body.get("metadata", {}).get("namespace")
    if not owner_name or not namespace:
        return
    owner = memo.kube.get("AdaptiveSpeculator", namespace, owner_name)
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    try:
        spec = AdaptiveSpeculatorSpec.model_validate(owner["spec"])
    except ValidationError:
        return  # reported by the speculator's own handler
    patch = refresh_status(memo.kube, owner, spec)
    if patch:
        logger.debug("event=status_refreshed speculator=%s keys=%s", owner_name, sorted(patch))


@kopf.on.event(GROUP, VERSION, REVISIONS)
def revision_changed(type: str | None, body: kopf.Body, memo: kopf.Memo, logger: Any, **_: Any) -> None:
    """Own each revision by its speculator (not as controller) and reconcile it when a phase changes."""
    meta = body.get("metadata", {})
    if type == "DELETED":
        return
    owner = memo.kube.get("AdaptiveSpeculator", meta["namespace"], body["spec"]["speculator"])
    if owner is None or owner["metadata"].get("deletionTimestamp"):
        return
    if not meta.get("ownerReferences"):
        ref = builders.owner_reference(builders.Owner.from_body(owner))
        ref["controller"] = False
        patch = {"metadata": {"ownerReferences": [ref]}}
        memo.kube.patch("SpeculatorRevision", meta["namespace"], meta["name"], patch)
    try:
        _run(kopf.Body(owner), memo, logger)
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        logger.warning("event=reconcile_failed speculator=%s error=%s", owner["metadata"]["name"], exc)
