"""Kubernetes actuator: SpeculatorRevisions, adaptation Jobs and status patches (docs/CONTRACTS.md).

The bodies and patches are built by pure functions (tested without a cluster); `KubernetesActuator`
only sends them. Status patches are JSON merge patches: `None` removes a key (e.g. canaryRevision).
Every call is idempotent: creating what exists (409) counts as done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adaspec.operator.models import dns_label as dns_name
from adaspec.operator.models import revision_object_name
from adaspec.operator.status import merge_conditions

from .actuators import RunStatus, fill
from .config import KubernetesActuatorConfig

GROUP, VERSION = "adaspec.dev", "v1alpha1"
ASPEC, SPECREV = "adaptivespeculators", "speculatorrevisions"
RUN_LABEL = "adaspec.dev/adaptation-run"


def revision_body(
    speculator: str,
    namespace: str,
    revision: str,
    artifact_uri: str,
    parent: str | None,
    sha256: str | None = None,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Return the SpeculatorRevision for a candidate (named by `revision_object_name`)."""
    spec: dict[str, Any] = {"speculator": speculator, "revision": revision, "artifactUri": artifact_uri}
    if parent:
        spec["parentRevision"] = parent
    if sha256:
        spec["sha256"] = sha256
    if metrics:
        spec["metrics"] = dict(metrics)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SpeculatorRevision",
        "metadata": {
            "name": revision_object_name(speculator, revision),
            "namespace": namespace,
            "labels": {"adaspec.dev/speculator": speculator},
        },
        "spec": spec,
    }


def revision_phase_patch(phase: str, reason: str = "") -> dict[str, Any]:
    """Return the status patch that moves a SpeculatorRevision to `phase`."""
    return {"status": {"phase": phase, "reason": reason}}


def canary_patch(revision: str) -> dict[str, Any]:
    """Return the AdaptiveSpeculator status patch that starts a canary of `revision`."""
    return {"status": {"canaryRevision": revision}}


def promote_patch(revision: str) -> dict[str, Any]:
    """Return the status patch that makes `revision` stable and ends the canary."""
    return {"status": {"stableRevision": revision, "canaryRevision": None}}


def abort_patch() -> dict[str, Any]:
    """Return the status patch that ends the canary (the stable revision keeps serving)."""
    return {"status": {"canaryRevision": None}}


def rollback_patch(to_revision: str) -> dict[str, Any]:
    """Return the status patch that serves `to_revision` again."""
    return {"status": {"stableRevision": to_revision, "canaryRevision": None}}


ADAPTING_REASONS = {
    "running": ("True", "AdaptationRunning"),
    "succeeded": ("False", "AdaptationSucceeded"),
    "failed": ("False", "AdaptationFailed"),
}


def adapting_patch(
    current: dict[str, Any], run_status: str, message: str, now: datetime
) -> dict[str, Any] | None:
    """Return the status patch that sets the Adapting condition on `current` (a speculator as read).

    Conditions are one list, so the patch carries the whole list (the operator's conditions kept) and
    `metadata.resourceVersion`: the API server refuses it (409) if the object changed since it was read,
    and the caller reads again. None when the condition already says so (no write).
    """
    if run_status not in ADAPTING_REASONS:
        return None
    status, reason = ADAPTING_REASONS[run_status]
    old = list((current.get("status") or {}).get("conditions") or [])
    cond = {"type": "Adapting", "status": status, "reason": reason, "message": message[:1000]}
    if any(all(c.get(k) == v for k, v in cond.items()) for c in old):
        return None
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
        "status": {"conditions": merge_conditions(old, [cond], stamp)},
    }


def figures_patch(figures: dict[str, Any]) -> dict[str, Any]:
    """Return the status patch with the latest observed figures (CONTRACTS: written by the control plane).

    Keys: acceptanceRate, meanAcceptedLength, tokensPerSecond (numbers), lastDriftTime,
    lastAdaptationTime (RFC 3339); absent or None figures are left as they are.
    """
    keys = ("acceptanceRate", "meanAcceptedLength", "tokensPerSecond", "lastDriftTime", "lastAdaptationTime")
    return {"status": {k: figures[k] for k in keys if figures.get(k) is not None}}


def adaptation_job(
    speculator: str, namespace: str, run_id: str, parent: str | None, config: KubernetesActuatorConfig
) -> dict[str, Any]:
    """Return the batch/v1 Job that runs one adaptation (its output under the artifact root)."""
    out = f"{config.artifact_root.rstrip('/')}/{speculator}/{run_id}"
    values = {
        "speculator": speculator,
        "out": out,
        "run_id": run_id,
        "revision": dns_name("r", run_id),
        "parent": parent or "static",
        "parent_artifact": "",
        "target_model": config.target_model,
        "capture": config.capture,
    }
    labels = {"adaspec.dev/speculator": speculator, RUN_LABEL: dns_name(run_id)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": dns_name("adapt", run_id), "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 1,
            "ttlSecondsAfterFinished": 86400,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "adapt",
                            "image": config.image,
                            "args": [fill(a, values) for a in config.job_args],
                        }
                    ],
                },
            },
        },
    }


def job_status(job: dict[str, Any]) -> RunStatus:
    """Return where an adaptation Job stands.

    Its candidate arrives through the API (`POST .../revisions` with the run id) before the Job ends, and
    only runs still in flight are polled: a Job that completed while its run is in flight never
    registered one, which is a failure.
    """
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Failed":
            return RunStatus(status="failed", message=str(cond.get("message") or cond.get("reason") or ""))
        if cond.get("type") == "Complete":
            return RunStatus(status="failed", message="job completed without registering a candidate")
    return RunStatus(status="running")


class KubernetesActuator:
    """Sends the bodies and patches above through the Kubernetes API (in-cluster or kubeconfig)."""

    def __init__(self, config: KubernetesActuatorConfig, api_client: Any | None = None) -> None:
        from kubernetes import client
        from kubernetes import config as kconfig

        if api_client is None:
            try:
                kconfig.load_incluster_config()  # type: ignore[no-untyped-call]
            except kconfig.ConfigException:
                kconfig.load_kube_config()  # type: ignore[no-untyped-call]
        self._config = config
        self._custom: Any = client.CustomObjectsApi(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._exc = client.ApiException

    def _create(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except self._exc as exc:
            if exc.status != 409:  # already there: an action retried
                raise

    def _aspec(self, ns: str, name: str, body: dict[str, Any]) -> None:
        self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, ASPEC, name, body)

    def _rev(self, ns: str, speculator: str, revision: str, phase: str, reason: str = "") -> None:
        name = revision_object_name(speculator, revision)
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, ns, SPECREV, name, revision_phase_patch(phase, reason)
            )
        except self._exc as exc:
            if exc.status != 404:  # revisions made before the control plane (the static draft) may not exist
                raise

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None:
        patch = figures_patch(figures)
        if patch["status"]:
            self._aspec(namespace, speculator, patch)

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None:
        job = adaptation_job(speculator, namespace, run_id, parent, self._config)
        self._create(self._batch.create_namespaced_job, namespace, job)
        self._adapting(namespace, speculator, "running", f"run {run_id}")

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus:
        try:
            job = self._batch.read_namespaced_job(dns_name("adapt", run_id), namespace)
        except self._exc as exc:
            if exc.status == 404:
                result = RunStatus(status="failed", message="job not found")
                self._adapting(namespace, speculator, result.status, f"run {run_id}: {result.message}")
                return result
            raise
        result = job_status(job.to_dict() if hasattr(job, "to_dict") else dict(job))
        # Re-asserted on every poll: if an operator status write raced ours, the next poll heals it.
        detail = result.message or result.status
        self._adapting(namespace, speculator, result.status, f"run {run_id}: {detail}")
        return result

    def _adapting(self, ns: str, name: str, run_status: str, message: str, attempts: int = 5) -> None:
        """Set the Adapting condition: read, merge, patch with the version read; again on a conflict."""
        for _ in range(attempts):
            try:
                current: dict[str, Any] = self._custom.get_namespaced_custom_object_status(
                    GROUP, VERSION, ns, ASPEC, name
                )
            except self._exc as exc:
                if exc.status == 404:
                    return  # the speculator is gone: nothing to report on
                raise
            patch = adapting_patch(current, run_status, message, datetime.now(UTC))
            if patch is None:
                return
            try:
                self._aspec(ns, name, patch)
                return
            except self._exc as exc:
                if exc.status != 409:
                    raise
        raise RuntimeError(f"AdaptiveSpeculator {ns}/{name}: Adapting condition kept conflicting")

    def start_canary(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        parent: str | None,
        sha256: str | None = None,
    ) -> None:
        body = revision_body(speculator, namespace, revision, artifact_uri or "", parent, sha256=sha256)
        self._create(self._custom.create_namespaced_custom_object, GROUP, VERSION, namespace, SPECREV, body)
        self._rev(namespace, speculator, revision, "Canary", "canary started")
        self._aspec(namespace, speculator, canary_patch(revision))

    def promote(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        previous: str | None,
        sha256: str | None = None,
    ) -> None:
        self._aspec(namespace, speculator, promote_patch(revision))
        self._rev(namespace, speculator, revision, "Promoted", "passed canary analysis")
        if previous:
            self._rev(namespace, speculator, previous, "Superseded", f"superseded by {revision}")

    def abort_canary(self, speculator: str, namespace: str, revision: str, reason: str) -> None:
        self._aspec(namespace, speculator, abort_patch())
        self._rev(namespace, speculator, revision, "Rejected", reason)

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
        self._aspec(namespace, speculator, rollback_patch(to_revision))
        self._rev(namespace, speculator, revision, "RolledBack", reason)
        self._rev(namespace, speculator, to_revision, "Promoted", f"rollback from {revision}")
