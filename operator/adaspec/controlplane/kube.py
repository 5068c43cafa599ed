"""Kubernetes actuator: SpeculatorRevisions, adaptation Jobs and status patches (docs/CONTRACTS.md).

The bodies and patches are built by pure functions (tested without a cluster); `KubernetesActuator`
only sends them. Status patches are JSON merge patches: `None` removes a key (e.g. canaryRevision).
Every call is idempotent: creating what exists (409) counts as done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adaspec.operator.builders import (
    CAPTURE_SUBDIR,
    REVISIONS_SUBDIR,
    STATIC_REVISION,
    STORAGE_DIR,
    Owner,
    container_security_context,
    labels,
    owner_reference,
    pod_security_context,
    resource_requirements,
)
from adaspec.operator.models import AdaptiveSpeculatorSpec, RevisionPhase, revision_object_name
from adaspec.operator.models import dns_label as dns_name
from adaspec.operator.status import merge_conditions
from adaspec.runtime.server.locations import STORAGE_ROOT_ENV, storage_uri

from .actuators import GATED_EXIT, PermanentActionError, RunStatus, fill
from .config import KubernetesActuatorConfig

GROUP, VERSION = "adaspec.dev", "v1alpha1"
ASPEC, SPECREV = "adaptivespeculators", "speculatorrevisions"
RUN_LABEL = "adaspec.dev/adaptation-run"
BAD_INPUT_EXIT = 2  # `adaspec adapt`: bad input (docs/CONTRACTS.md); GATED_EXIT 3: the gate refused


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


def revision_phase_patch(phase: RevisionPhase, reason: str = "") -> dict[str, Any]:
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

    Keys: acceptanceRate, meanAcceptedLength, tokensPerSecond (numbers, rounded to what `kubectl get`
    should print: 4, 3 and 2 decimals), lastDriftTime, lastAdaptationTime (RFC 3339); absent or None figures
    are left as they are.
    """
    keys = ("acceptanceRate", "meanAcceptedLength", "tokensPerSecond", "lastDriftTime", "lastAdaptationTime")
    out = {k: figures[k] for k in keys if figures.get(k) is not None}
    for key, digits in FIGURE_DIGITS.items():
        if isinstance(out.get(key), float):
            out[key] = round(out[key], digits)
    return {"status": out}


FIGURE_DIGITS = {"acceptanceRate": 4, "meanAcceptedLength": 3, "tokensPerSecond": 2}


TOKEN_DIR = "/var/run/secrets/adaspec"  # the Job's projected token for the control plane's API
TOKEN_TTL_S = 3600  # the kubelet renews a projected token before it expires


def adaptation_job(
    owner: Owner,
    spec: AdaptiveSpeculatorSpec,
    run_id: str,
    parent: str | None,
    parent_artifact: str,
    config: KubernetesActuatorConfig,
) -> dict[str, Any]:
    """Return the batch/v1 Job that runs one adaptation of `owner` as its `spec` says.

    Image, node placement and security context are the runtime pods'; resources are
    `spec.adaptation.resources`. It mounts `spec.storage.claimName` (captured traffic in, the candidate
    out under revisions/) and registers the candidate with the control plane using a projected token of
    `config.job_service_account`. Exit codes 2 (bad input) and 3 (the gate refused) fail the Job at once:
    a retry would give the same answer. ValueError when the speculator has no storage claim.
    """
    if not spec.storage.claim_name:
        raise ValueError(
            f"AdaptiveSpeculator {owner.namespace}/{owner.name}: spec.storage.claimName is empty; an "
            "adaptation Job reads the captured traffic from that claim and writes its candidate there"
        )
    speculator = owner.name
    values = {
        "speculator": speculator,
        "out": f"{STORAGE_DIR}/{REVISIONS_SUBDIR}/{speculator}/{run_id}",
        "run_id": run_id,
        "revision": dns_name("r", run_id),
        "parent": parent or STATIC_REVISION,
        "parent_artifact": parent_artifact,
        "target_model": spec.target_model.uri,
        "capture": f"{STORAGE_DIR}/{CAPTURE_SUBDIR}",
    }
    args = [fill(a, values) for a in config.job_args] + list(config.job_extra_args)
    args += [
        f"--artifact-uri={storage_uri(f'{REVISIONS_SUBDIR}/{speculator}/{run_id}')}",
        f"--register-url={config.register_url}",
        f"--token-file={TOKEN_DIR}/token",
    ]
    job_labels = {
        **labels(owner, "adaptation"),
        "adaspec.dev/speculator": speculator,
        RUN_LABEL: dns_name(run_id),
    }
    container: dict[str, Any] = {
        "name": "adapt",
        "image": spec.runtime.image,
        "command": ["adaspec"],
        "args": args,
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/var/cache/adaspec"},
            {"name": STORAGE_ROOT_ENV, "value": STORAGE_DIR},
        ],
        "resources": resource_requirements(spec.adaptation.resources),
        "terminationMessagePolicy": "FallbackToLogsOnError",  # the gate's reasons reach the pod status
        "volumeMounts": [
            {"name": "storage", "mountPath": STORAGE_DIR},
            {"name": "token", "mountPath": TOKEN_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": "/var/cache/adaspec"},
        ],
        "securityContext": container_security_context(),
    }
    token = {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_TTL_S}}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": config.job_service_account,
        "automountServiceAccountToken": False,  # no Kubernetes API token: only the projected one
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": [
            {"name": "storage", "persistentVolumeClaim": {"claimName": spec.storage.claim_name}},
            {"name": "token", "projected": {"sources": [token]}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache", "emptyDir": {}},
        ],
    }
    if spec.runtime.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(spec.runtime.node_selector.items()))
    if spec.runtime.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.runtime.tolerations
        ]
    no_retry = {"containerName": "adapt", "operator": "In", "values": [BAD_INPUT_EXIT, GATED_EXIT]}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": dns_name("adapt", run_id),
            "namespace": owner.namespace,
            "labels": job_labels,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "backoffLimit": 1,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": no_retry}]},
            "activeDeadlineSeconds": config.job_deadline_s,
            "ttlSecondsAfterFinished": config.job_ttl_s,
            "template": {"metadata": {"labels": job_labels}, "spec": pod_spec},
        },
    }


def pod_failure(pods: list[dict[str, Any]]) -> str:
    """Return why an adaptation Job's last pod failed, from its container status (exit code and the
    termination message, the end of its output): the gate's reasons when it refused the candidate."""

    def started(p: dict[str, Any]) -> str:
        return str((p.get("status") or {}).get("startTime") or "")

    for pod in sorted(pods, key=started, reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if not term:
                continue
            code, message = term.get("exitCode"), str(term.get("message") or "").strip()
            if code == GATED_EXIT:
                reasons = [ln.strip()[2:] for ln in message.splitlines() if ln.strip().startswith("- ")]
                return "no candidate: the offline gate refused it: " + ("; ".join(reasons) or message[-300:])
            detail = message.splitlines()[-1] if message else term.get("reason") or ""
            return f"pod {pod['metadata']['name']}: exit code {code}: {detail}"[:1000]
    return ""


def job_status(job: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> RunStatus:
    """Return where an adaptation Job stands.

    Its candidate arrives through the API (`POST .../revisions` with the run id) before the Job ends, and
    only runs still in flight are polled: a Job that completed while its run is in flight never
    registered one, which is a failure. A failed Job's reason comes from its pods where they say.
    """
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Failed":
            why = str(cond.get("message") or cond.get("reason") or "")
            detail = pod_failure(pods or [])
            return RunStatus(status="failed", message=f"{detail} ({why})" if detail else why)
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
        self._core = client.CoreV1Api(api_client)
        self._api = client.ApiClient() if api_client is None else api_client
        self._exc = client.ApiException

    def _refused(self, exc: Any, what: str) -> Exception:
        """Return the error to raise for an API error: a refusal for good (400, 404, 422: the object is
        invalid or gone, a retry gets the same answer) is permanent; anything else is retried."""
        if exc.status in (400, 404, 422):
            detail = str(exc.body or exc.reason or "")[:500]
            return PermanentActionError(f"{what}: the API server refused it ({exc.status}): {detail}")
        return exc  # type: ignore[no-any-return]

    def _create(self, fn: Any, *args: Any, what: str = "create") -> None:
        try:
            fn(*args)
        except self._exc as exc:
            if exc.status != 409:  # already there: an action retried
                raise self._refused(exc, what) from None

    def _aspec(self, ns: str, name: str, body: dict[str, Any]) -> None:
        try:
            self._custom.patch_namespaced_custom_object_status(GROUP, VERSION, ns, ASPEC, name, body)
        except self._exc as exc:
            raise self._refused(exc, f"patch of AdaptiveSpeculator {ns}/{name} status") from None

    def _rev(self, ns: str, speculator: str, revision: str, phase: RevisionPhase, reason: str = "") -> None:
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

    def _parent_artifact(self, ns: str, speculator: str, spec: AdaptiveSpeculatorSpec, parent: str) -> str:
        """The parent's artifact: the static draft's URI, else its SpeculatorRevision's."""
        if parent == STATIC_REVISION:
            return spec.static_draft.uri
        name = revision_object_name(speculator, parent)
        try:
            rev = self._custom.get_namespaced_custom_object(GROUP, VERSION, ns, SPECREV, name)
        except self._exc as exc:
            raise self._refused(exc, f"SpeculatorRevision {ns}/{name} (parent of the run)") from None
        return str((rev.get("spec") or {}).get("artifactUri") or "")

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None:
        try:
            obj = self._custom.get_namespaced_custom_object(GROUP, VERSION, namespace, ASPEC, speculator)
        except self._exc as exc:
            raise self._refused(exc, f"AdaptiveSpeculator {namespace}/{speculator}") from None
        spec = AdaptiveSpeculatorSpec.model_validate(obj.get("spec") or {})
        owner = Owner.from_body(obj)
        parent = parent or STATIC_REVISION
        try:
            job = adaptation_job(
                owner,
                spec,
                run_id,
                parent,
                self._parent_artifact(namespace, speculator, spec, parent),
                self._config,
            )
        except ValueError as exc:
            raise PermanentActionError(str(exc)) from None
        self._create(self._batch.create_namespaced_job, namespace, job, what=f"Job {job['metadata']['name']}")
        self._adapting(namespace, speculator, "running", f"run {run_id}: Job {job['metadata']['name']}")

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus:
        name = dns_name("adapt", run_id)
        try:
            job = self._batch.read_namespaced_job(name, namespace)
        except self._exc as exc:
            if exc.status == 404:
                result = RunStatus(status="failed", message=f"Job {namespace}/{name} not found")
                self._adapting(namespace, speculator, result.status, f"run {run_id}: {result.message}")
                return result
            raise
        body = self._api.sanitize_for_serialization(job)
        pods: list[dict[str, Any]] = []
        if any(c.get("type") == "Failed" for c in (body.get("status") or {}).get("conditions") or []):
            listed = self._core.list_namespaced_pod(namespace, label_selector=f"job-name={name}")
            pods = [self._api.sanitize_for_serialization(p) for p in listed.items]
        result = job_status(body, pods)
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
