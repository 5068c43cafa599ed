"""The Kubernetes actuator's bodies and patches (docs/CONTRACTS.md), built without a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adaspec.controlplane.config import KubernetesActuatorConfig
from adaspec.controlplane.kube import (
    abort_patch,
    adaptation_job,
    adapting_patch,
    canary_patch,
    dns_name,
    figures_patch,
    job_status,
    promote_patch,
    revision_body,
    revision_phase_patch,
    rollback_patch,
)
from adaspec.operator.builders import Owner
from adaspec.operator.models import AdaptiveSpeculatorSpec

CRDS = Path(__file__).resolve().parents[3] / "crds"


def test_revision_body_matches_the_crd() -> None:
    body = revision_body("chat", "ml", "r7", "s3://a/chat/r7", "r6", "a" * 64, {"acc": 0.8})
    assert body["metadata"]["name"] == "chat-r7" and body["metadata"]["namespace"] == "ml"
    crd = yaml.safe_load((CRDS / "adaspec.dev_speculatorrevisions.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(body["spec"]) <= set(schema["properties"])
    assert set(schema["required"]) <= set(body["spec"])
    assert body["kind"] == crd["spec"]["names"]["kind"]


def test_status_patches_follow_the_contract() -> None:
    crd = yaml.safe_load((CRDS / "adaspec.dev_adaptivespeculators.yaml").read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for patch in (canary_patch("r7"), promote_patch("r7"), abort_patch(), rollback_patch("r6")):
        assert set(patch["status"]) <= set(status)
    assert promote_patch("r7") == {"status": {"stableRevision": "r7", "canaryRevision": None}}
    assert abort_patch() == {"status": {"canaryRevision": None}}
    assert rollback_patch("r6") == {"status": {"stableRevision": "r6", "canaryRevision": None}}
    assert revision_phase_patch("Rejected", "worse") == {"status": {"phase": "Rejected", "reason": "worse"}}


def _spec(**extra: object) -> AdaptiveSpeculatorSpec:
    return AdaptiveSpeculatorSpec.model_validate(
        {"targetModel": {"uri": "file:///m/t"}, "storage": {"claimName": "fleet"}, **extra}
    )


def test_adaptation_job_is_built_from_the_speculator() -> None:
    spec = _spec(
        runtime={"image": "ghcr.io/x/adaspec:1", "nodeSelector": {"gpu": "h100"}},
        adaptation={"resources": {"limits": {"nvidia.com/gpu": 2}}},
    )
    job = adaptation_job(
        Owner("chat", "ml", "u1"), spec, "chat-run3", "r6", "file:///a/r6", KubernetesActuatorConfig()
    )
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == "adapt-chat-run3" and job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["ownerReferences"][0]["uid"] == "u1"  # deleted with its speculator
    assert container["image"] == "ghcr.io/x/adaspec:1"
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "2"}}
    assert pod["nodeSelector"] == {"gpu": "h100"} and pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "adaspec-adaptation" and pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [2, 3]  # bad input, gate refused: no retry
    assert job["spec"]["activeDeadlineSeconds"] == 4 * 3600


def test_an_adaptation_job_needs_the_storage_claim() -> None:
    spec = AdaptiveSpeculatorSpec.model_validate({"targetModel": {"uri": "file:///m/t"}})
    with pytest.raises(ValueError, match="spec.storage.claimName is empty"):
        adaptation_job(Owner("chat", "ml", "u1"), spec, "run", None, "", KubernetesActuatorConfig())


def test_job_status() -> None:
    failed = {
        "status": {"conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}]}
    }
    assert job_status(failed).status == "failed" and job_status(failed).message == "BackoffLimitExceeded"
    assert job_status({"status": {"active": 1}}).status == "running"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert job_status(done).status == "failed" and "without registering" in job_status(done).message


def _pod(code: int, message: str) -> dict[str, object]:
    term = {"exitCode": code, "reason": "Error", "message": message}
    return {
        "metadata": {"name": "adapt-run-x"},
        "status": {
            "startTime": "2026-01-01T00:00:00Z",
            "containerStatuses": [{"state": {"terminated": term}}],
        },
    }


def test_a_failed_jobs_reason_comes_from_its_pod() -> None:
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}]}}
    gated = _pod(3, "gate: refused, nothing written:\n  - acceptance 0.20 < parent 0.21 + 0.02\n")
    st = job_status(failed, [gated])
    assert st.message.startswith("no candidate: the offline gate refused it: acceptance 0.20 < parent")
    crashed = job_status(failed, [_pod(2, "adaspec adapt: error: no captured traffic in '/x'")])
    assert "exit code 2: adaspec adapt: error: no captured traffic" in crashed.message
    assert "(PodFailurePolicy)" in crashed.message


def test_dns_name() -> None:
    assert dns_name("Chat_Bot", "R7.1") == "chat-bot-r7-1"
    assert len(dns_name("x" * 100)) == 63


def test_revision_names_agree_between_control_plane_and_operator_even_when_long() -> None:
    from adaspec.operator.builders import Owner
    from adaspec.operator.kube import Kube
    from adaspec.operator.models import AdaptiveSpeculatorSpec
    from adaspec.operator.reconcile import resolve_artifact

    speculator = "a-very-long-speculator-name-for-the-code-completion-fleet"  # 57 characters
    written: dict[str, dict[str, object]] = {}
    for revision in ("r20261128-000001", "r20261128-000002"):
        body = revision_body(speculator, "ml", revision, f"s3://b/{revision}", None, "a" * 64)
        name = str(body["metadata"]["name"])
        assert len(name) <= 63 and name not in written  # valid, and distinct revisions stay distinct
        written[name] = body

    class Recorded(Kube):  # the operator's read path against what the control plane wrote
        def __init__(self) -> None:
            pass

        def get(self, kind: str, namespace: str, name: str) -> dict[str, object] | None:
            return written.get(name) if kind == "SpeculatorRevision" else None

    owner = Owner(name=speculator, namespace="ml", uid="u1")
    spec = AdaptiveSpeculatorSpec.model_validate({"targetModel": {"uri": "hf://org/target"}})
    artifact = resolve_artifact(Recorded(), owner, spec, "r20261128-000002")
    assert artifact.uri == "s3://b/r20261128-000002"


def test_figures_patch_skips_unknown_figures() -> None:
    figures = {"acceptanceRate": 0.71, "meanAcceptedLength": None, "lastDriftTime": "2026-03-01T00:10:00Z"}
    assert figures_patch(figures) == {
        "status": {"acceptanceRate": 0.71, "lastDriftTime": "2026-03-01T00:10:00Z"}
    }


def test_figures_are_rounded_for_kubectl_get() -> None:
    figures = {
        "acceptanceRate": 0.3799126637554585,
        "meanAcceptedLength": 2.13333333,
        "tokensPerSecond": 10.4533,
    }
    assert figures_patch(figures)["status"] == {
        "acceptanceRate": 0.3799,
        "meanAcceptedLength": 2.133,
        "tokensPerSecond": 10.45,
    }


def test_adapting_condition_patch_keeps_the_operators_conditions_and_the_version_read() -> None:
    from datetime import UTC, datetime

    ready = {"type": "Ready", "status": "True", "reason": "Available", "message": ""}
    ready["lastTransitionTime"] = "t0"
    current = {"metadata": {"resourceVersion": "41"}, "status": {"conditions": [ready]}}
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    patch = adapting_patch(current, "running", "run r7", now)
    assert patch is not None and patch["metadata"] == {"resourceVersion": "41"}
    ready_after, adapting = patch["status"]["conditions"]
    assert ready_after == ready  # the operator's condition, untouched
    assert adapting == {
        "type": "Adapting",
        "status": "True",
        "reason": "AdaptationRunning",
        "message": "run r7",
        "lastTransitionTime": "2026-11-28T12:00:00Z",
    }
    current["status"]["conditions"] = patch["status"]["conditions"]
    assert adapting_patch(current, "running", "run r7", now) is None  # already so: no write
    done = adapting_patch(current, "failed", "run r7: BackoffLimitExceeded", now)
    assert done is not None and done["status"]["conditions"][1]["status"] == "False"
    assert done["status"]["conditions"][1]["reason"] == "AdaptationFailed"
    assert adapting_patch(current, "unknown", "", now) is None
