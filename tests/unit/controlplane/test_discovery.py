"""AdaptiveSpeculator -> the control plane's speculator: every policy field of the CRD is mapped (or said to
belong elsewhere), each one moves the policy it names; pods -> one scrape target per ready pod."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adaspec.controlplane.config import Policies
from adaspec.controlplane.discovery import pod_endpoints, pod_selector, policies_from_cr, speculator_from_cr
from adaspec.controlplane.policies.drift import DriftPolicy
from adaspec.operator.builders import Artifact, Owner, build_deployment, role_selector
from adaspec.operator.models import AdaptiveSpeculatorSpec

CRD = Path(__file__).resolve().parents[3] / "crds" / "adaspec.dev_adaptivespeculators.yaml"
FLEET = Policies(drift=DriftPolicy(slack=0.07, min_draft_tokens=123))

# CR field -> (policy, field) it sets; the value the CR gives -> the value the policy gets
MAPPED: dict[str, tuple[str, str, Any, Any]] = {
    "adaptation.driftThreshold": ("drift", "threshold", 0.25, 0.25),
    "adaptation.driftWindow": ("drift", "max_window_s", "15m", 900.0),
    "adaptation.cooldown": ("adaptation", "cooldown_s", "90s", 90.0),
    "promotion.analysisInterval": ("canary", "interval_s", "30s", 30.0),
    "promotion.minSamples": ("canary", "min_draft_tokens", 77, 77),
    "promotion.minImprovement": ("canary", "success_acceptance_delta", 0.05, 0.05),
    "promotion.failureLimit": ("canary", "failure_limit", 2, 1),  # 2 failures reject: 1 tolerated
    "rollback.maxAcceptanceDrop": ("guard", "max_drop", 0.11, 0.11),
    "rollback.guardWindow": ("guard", "window_s", "2h", 7200.0),
}
# used by someone else than the policies: the cron job, the operator, the Job builder
ELSEWHERE = {"adaptation.schedule", "adaptation.resources", "promotion.canaryReplicas"}


def crd_fields() -> set[str]:
    doc = yaml.safe_load(CRD.read_text())
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    return {
        f"{section}.{f}"
        for section in ("adaptation", "promotion", "rollback")
        for f in spec[section]["properties"]
    }


def cr(spec: dict[str, Any], name: str = "chat", namespace: str = "ml") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": "u1"},
        "spec": {"targetModel": {"uri": "file:///m"}, **spec},
    }


def test_every_policy_field_of_the_crd_is_mapped_or_used_elsewhere() -> None:
    assert crd_fields() == set(MAPPED) | ELSEWHERE


@pytest.mark.parametrize("field", sorted(MAPPED))
def test_each_mapped_field_sets_its_policy(field: str) -> None:
    section, key = field.split(".")
    policy, attr, given, expected = MAPPED[field]
    found = speculator_from_cr(cr({section: {key: given}}), FLEET)
    assert found.config.policies is not None
    assert getattr(getattr(found.config.policies, policy), attr) == expected
    default = speculator_from_cr(cr({}), FLEET).config.policies
    assert getattr(getattr(default, policy), attr) != expected  # the field moved it


def test_the_fleet_defaults_fill_what_the_crd_has_no_field_for() -> None:
    policies = policies_from_cr(AdaptiveSpeculatorSpec.model_validate({"targetModel": {"uri": "x"}}), FLEET)
    assert (policies.drift.slack, policies.drift.min_draft_tokens) == (0.07, 123)
    assert policies.canary.iterations == FLEET.canary.iterations


def test_schedule_pause_and_pin() -> None:
    found = speculator_from_cr(cr({"adaptation": {"schedule": "@hourly"}}), FLEET)
    assert (found.config.name, found.config.namespace, found.config.source) == ("chat", "ml", "pods")
    assert found.config.schedule == "@hourly" and found.hold == ""
    assert speculator_from_cr(cr({"paused": True}), FLEET).hold == "spec.paused is true"
    assert speculator_from_cr(cr({"pinnedRevision": "r3"}), FLEET).hold == "spec.pinnedRevision is r3"


def test_a_bad_resource_is_named() -> None:
    with pytest.raises(ValueError, match=r"AdaptiveSpeculator ml/chat: spec\.promotion\.minSamples"):
        speculator_from_cr(cr({"promotion": {"minSamples": 0}}), FLEET)


def pod(name: str, uid: str, role: str, ip: str | None, ready: bool = True, **meta: Any) -> dict[str, Any]:
    """A runtime pod as the operator's Deployment makes it (its template), with a status."""
    spec = AdaptiveSpeculatorSpec.model_validate({"targetModel": {"uri": "x"}})
    dep = build_deployment(Owner("chat", "ml", "u1"), spec, Artifact("static", ""), role, "h")  # type: ignore[arg-type]
    template = dep["spec"]["template"]
    status: dict[str, Any] = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}
    if ip:
        status["podIP"] = ip
    return {
        "metadata": {"name": name, "uid": uid, "labels": template["metadata"]["labels"], **meta},
        "spec": template["spec"],
        "status": status,
    }


def test_one_target_per_ready_pod_at_its_own_ip() -> None:
    pods = [
        pod("chat-stable-a", "u-a", "stable", "10.1.0.5"),
        pod("chat-stable-b", "u-b", "stable", "10.1.0.6"),
        pod("chat-canary-c", "u-c", "canary", "10.1.0.7"),
        pod("chat-stable-d", "u-d", "stable", None),  # not started: no IP yet
        pod("chat-stable-e", "u-e", "stable", "10.1.0.8", ready=False),
        pod("chat-stable-f", "u-f", "stable", "10.1.0.9", deletionTimestamp="2026-01-01T00:00:00Z"),
    ]
    eps = pod_endpoints(pods)
    assert [(e.url, e.role, e.pod) for e in eps] == [
        ("http://10.1.0.5:9090/metrics", "stable", "chat-stable-a/u-a"),
        ("http://10.1.0.6:9090/metrics", "stable", "chat-stable-b/u-b"),
        ("http://10.1.0.7:9090/metrics", "canary", "chat-canary-c/u-c"),
    ]
    # a new pod at a reused IP is a new series
    again = pod_endpoints([pod("chat-stable-g", "u-g", "stable", "10.1.0.5")])
    assert again[0].url == eps[0].url and again[0].key != eps[0].key


def test_the_selector_is_the_one_the_operator_sets() -> None:
    owner = Owner("chat", "ml", "u1")
    labels = pod("p", "u", "canary", "10.0.0.1")["metadata"]["labels"]
    wanted = dict(kv.split("=") for kv in pod_selector("chat").split(","))
    assert wanted.items() <= labels.items()
    assert wanted.items() <= role_selector(owner, "stable").items()
