"""The reconciler against an in-memory stand-in for the API: what it applies, deletes, reports and skips."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from adaspec.operator.kube import ApplyResult
from adaspec.operator.reconcile import reconcile


class FakeKube:
    """Objects by (kind, namespace, name); apply reports created/updated/unchanged like the API server."""

    def __init__(self, servicemonitors: bool = False) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.status_patches: list[dict[str, Any]] = []
        self.servicemonitors = servicemonitors

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, namespace, name))

    def apply(self, obj: Mapping[str, Any]) -> ApplyResult:
        key = (obj["kind"], obj["metadata"]["namespace"], obj["metadata"]["name"])
        before = self.objects.get(key)
        self.objects[key] = dict(obj)
        if before is None:
            return "created"
        return "unchanged" if before == obj else "updated"

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        return self.objects.pop((kind, namespace, name), None) is not None

    def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any], resource_version: str = ""
    ) -> bool:
        if resource_version == "stale":
            return False
        self.status_patches.append(dict(status))
        return True

    def has_api_group(self, group_version: str) -> bool:
        return self.servicemonitors


def body(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "s", "namespace": "ns", "uid": "u", "generation": 2},
        "spec": {"targetModel": {"uri": "m"}, **(spec or {})},
        "status": status or {},
    }


def run(kube: FakeKube, b: dict[str, Any]) -> tuple[list[str], list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []
    outcome = reconcile(kube, b, lambda *e: events.append(e))  # type: ignore[arg-type]
    return outcome.actions, events


def kinds(kube: FakeKube) -> list[str]:
    return sorted(f"{k}/{n}" for k, _, n in kube.objects)


def test_first_pass_creates_children_and_reports_status() -> None:
    kube = FakeKube(servicemonitors=True)
    actions, events = run(kube, body())
    assert kinds(kube) == [
        "ConfigMap/s-controller",
        "Deployment/s-stable",
        "PodDisruptionBudget/s",
        "Service/s",
        "ServiceMonitor/s",
    ]
    assert len(actions) == 5 and all(e[:2] == ("Normal", "Created") for e in events)
    (patch,) = kube.status_patches
    assert patch["phase"] == "Progressing" and patch["stableRevision"] == "static"
    assert patch["observedGeneration"] == 2


def test_second_pass_changes_nothing() -> None:
    kube = FakeKube()
    run(kube, body())
    actions, events = run(kube, body())
    assert actions == [] and events == []


def test_canary_needs_its_revision_object_and_is_deleted_when_unset() -> None:
    kube = FakeKube()
    run(kube, body())
    actions, events = run(kube, body(status={"canaryRevision": "r1"}))
    assert actions == [] and events == [("Warning", "RevisionMissing", "SpeculatorRevision s-r1 not found")]
    assert kube.status_patches[-1]["phase"] == "Degraded"
    kube.objects[("SpeculatorRevision", "ns", "s-r1")] = {"spec": {"artifactUri": "s3://r1", "sha256": ""}}
    actions, _ = run(kube, body(status={"canaryRevision": "r1"}))
    assert "created Deployment s-canary" in actions
    actions, _ = run(kube, body(status={"stableRevision": "r1"}))
    assert "deleted Deployment s-canary" in actions
    assert "updated Deployment s-stable" in actions


def test_paused_changes_no_children() -> None:
    kube = FakeKube()
    run(kube, body())
    before = dict(kube.objects)
    actions, _ = run(kube, body(spec={"paused": True, "runtime": {"image": "other"}}))
    assert actions == [] and kube.objects == before
    assert kube.status_patches[-1]["phase"] == "Paused"


@pytest.mark.parametrize("phase", ["Rejected", "RolledBack"])
def test_a_rejected_revision_never_serves_as_canary(phase: str) -> None:
    kube = FakeKube()
    kube.objects[("SpeculatorRevision", "ns", "s-r1")] = {
        "spec": {"artifactUri": "u"},
        "status": {"phase": phase},
    }
    run(kube, body(status={"canaryRevision": "r1"}))
    assert ("Deployment", "ns", "s-canary") not in kube.objects
    assert kube.status_patches[-1]["phase"] != "Canary"


def test_a_missing_stable_revision_changes_no_children_and_degrades() -> None:
    kube = FakeKube()
    run(kube, body())
    before = dict(kube.objects)
    actions, _ = run(kube, body(status={"stableRevision": "r5"}))
    assert actions == [] and kube.objects == before
    assert kube.status_patches[-1]["phase"] == "Degraded"
    degraded = [c for c in kube.status_patches[-1]["conditions"] if c["type"] == "Degraded"]
    assert degraded[0]["reason"] == "RevisionMissing"


def test_a_status_computed_from_a_stale_read_is_dropped() -> None:
    kube = FakeKube()
    b = body()
    b["metadata"]["resourceVersion"] = "stale"
    events: list[tuple[str, str, str]] = []
    outcome = reconcile(kube, b, lambda *e: events.append(e))  # type: ignore[arg-type]
    assert outcome.status == {} and kube.status_patches == []
