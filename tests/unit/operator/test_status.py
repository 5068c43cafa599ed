"""Status follows the observed Deployments: phase precedence, conditions and transition times."""

from __future__ import annotations

from typing import Any

from adaspec.operator.models import AdaptiveSpeculatorSpec
from adaspec.operator.reconcile import revisions
from adaspec.operator.status import Rollout, compute_status, merge_conditions, status_patch


def rollout(desired: int = 2, ready: int = 2, current: bool = True, failed: str | None = None) -> Rollout:
    return Rollout(desired, desired, ready, ready, ready, current, failed)


def status(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        generation=3,
        paused=False,
        stable_revision="static",
        canary_revision=None,
        stable=rollout(),
        canary=None,
        old_conditions=[],
        selector="a=b",
        now="2026-01-01T00:00:00Z",
    )
    args.update(kw)
    return compute_status(**args)


def cond(s: dict[str, Any], ctype: str) -> dict[str, Any]:
    (c,) = [c for c in s["conditions"] if c["type"] == ctype]
    return c


def test_complete_rollout_is_ready() -> None:
    s = status()
    assert s["phase"] == "Ready" and s["readyReplicas"] == 2 and s["observedGeneration"] == 3
    assert cond(s, "Ready")["status"] == "True"
    assert cond(s, "Canary")["status"] == "False"
    assert cond(s, "Degraded")["status"] == "False"


def test_phase_precedence() -> None:
    assert status(stable=None)["phase"] == "Pending"
    assert status(stable=rollout(ready=1))["phase"] == "Progressing"
    assert status(stable=rollout(current=False))["phase"] == "Progressing"
    assert status(canary_revision="r2", canary=rollout(1, 0))["phase"] == "Canary"
    assert status(stable=rollout(failed="ProgressDeadlineExceeded"))["phase"] == "Degraded"
    assert status(paused=True, stable=rollout(failed="X"))["phase"] == "Paused"


def test_transition_time_kept_while_status_unchanged() -> None:
    first = status(now="2026-01-01T00:00:00Z")
    again = status(old_conditions=first["conditions"], now="2026-01-02T00:00:00Z")
    assert cond(again, "Ready")["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = status(old_conditions=first["conditions"], stable=rollout(ready=0), now="2026-01-03T00:00:00Z")
    assert cond(flipped, "Ready")["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_control_plane_condition_is_preserved() -> None:
    adapting = {"type": "Adapting", "status": "True", "reason": "Drift", "lastTransitionTime": "t"}
    merged = merge_conditions([adapting], [{"type": "Ready", "status": "True"}], "now")
    assert [c["type"] for c in merged] == ["Ready", "Adapting"]
    assert merged[1] == adapting


def test_status_patch_is_empty_when_nothing_changed() -> None:
    s = status()
    assert status_patch(s, s) == {}
    assert status_patch({}, s) == s


def test_rollout_from_deployment() -> None:
    dep = {
        "metadata": {"generation": 4},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 4,
            "replicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}],
        },
    }
    assert Rollout.from_deployment(dep).complete
    dep["metadata"]["generation"] = 5
    assert not Rollout.from_deployment(dep).complete
    failed = {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
    dep["status"]["conditions"] = [failed]
    assert Rollout.from_deployment(dep).failed_reason == "ProgressDeadlineExceeded"


def test_pinned_revision_overrides_promotion_and_canary() -> None:
    base = {"targetModel": {"uri": "m"}}
    st = {"stableRevision": "r3", "canaryRevision": "r4"}
    assert revisions(AdaptiveSpeculatorSpec.model_validate(base), st) == ("r3", "r4")
    assert revisions(AdaptiveSpeculatorSpec.model_validate(base), {}) == ("static", None)
    pinned = AdaptiveSpeculatorSpec.model_validate({**base, "pinnedRevision": "r1"})
    assert revisions(pinned, st) == ("r1", None)


def test_a_missing_revision_degrades() -> None:
    s = status(problem="SpeculatorRevision x-r1 not found")
    assert s["phase"] == "Degraded"
    assert cond(s, "Degraded") | {"lastTransitionTime": None} == {
        "type": "Degraded",
        "status": "True",
        "reason": "RevisionMissing",
        "message": "SpeculatorRevision x-r1 not found",
        "observedGeneration": 3,
        "lastTransitionTime": None,
    }
