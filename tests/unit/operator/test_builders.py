"""Builders turn a spec into the children an AdaptiveSpeculator owns (no cluster needed)."""

from __future__ import annotations

from typing import Any

from adaspec.operator import builders
from adaspec.operator.builders import Artifact, Owner
from adaspec.operator.models import AdaptiveSpeculatorSpec

OWNER = Owner(name="llama", namespace="ml", uid="u-1")
STATIC = Artifact(revision="static", uri="hf://draft")


def spec(**overrides: Any) -> AdaptiveSpeculatorSpec:
    return AdaptiveSpeculatorSpec.model_validate({"targetModel": {"uri": "hf://target"}, **overrides})


def plan(s: AdaptiveSpeculatorSpec, canary: Artifact | None = None, sm: bool = False) -> dict[str, Any]:
    p = builders.plan_children(OWNER, s, STATIC, canary, servicemonitor=sm)
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in p.apply} | {"delete": p.delete_deployments}


def test_children_are_owned_labelled_and_named_after_the_speculator() -> None:
    children = plan(spec(), sm=True)
    assert sorted(k for k in children if k != "delete") == [
        "ConfigMap/llama-controller",
        "Deployment/llama-stable",
        "PodDisruptionBudget/llama",
        "Service/llama",
        "ServiceMonitor/llama",
    ]
    for key, obj in children.items():
        if key == "delete":
            continue
        meta = obj["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["labels"]["app.kubernetes.io/name"] == "adaspec"
        assert meta["labels"]["app.kubernetes.io/instance"] == "llama"
        assert meta["labels"]["app.kubernetes.io/component"]
        (ref,) = meta["ownerReferences"]
        assert ref == {
            "apiVersion": "adaspec.dev/v1alpha1",
            "kind": "AdaptiveSpeculator",
            "name": "llama",
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    assert children["delete"] == ("llama-canary",)


def test_servicemonitor_only_when_prometheus_operator_is_installed() -> None:
    assert "ServiceMonitor/llama" not in plan(spec(), sm=False)


def test_stable_deployment_requests_gpus_and_is_locked_down() -> None:
    dep = plan(spec(runtime={"replicas": 3, "nodeSelector": {"pool": "h200"}}))["Deployment/llama-stable"]
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["nodeSelector"] == {"pool": "h200"}
    assert "--draft-revision=static" in c["args"] and "--draft-artifact=hf://draft" in c["args"]
    assert "--target-model=hf://target" in c["args"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert "adaspec.dev/revision" not in selector  # the selector is immutable; the revision changes


def test_canary_deployment_serves_the_canary_artifact_with_canary_replicas() -> None:
    canary = Artifact(revision="r7", uri="s3://bucket/r7", sha256="a" * 64)
    children = plan(spec(promotion={"canaryReplicas": 2}), canary=canary)
    dep = children["Deployment/llama-canary"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert dep["spec"]["replicas"] == 2
    expected = {"--draft-revision=r7", "--draft-artifact=s3://bucket/r7", f"--draft-sha256={'a' * 64}"}
    assert expected <= set(args)
    assert children["delete"] == ()
    stable_sel = children["Deployment/llama-stable"]["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["selector"]["matchLabels"] != stable_sel


def test_service_selects_stable_and_canary_pods() -> None:
    children = plan(spec(), canary=Artifact("r1", "u"))
    svc_sel = children["Service/llama"]["spec"]["selector"]
    for role in ("stable", "canary"):
        labels = children[f"Deployment/llama-{role}"]["spec"]["template"]["metadata"]["labels"]
        assert svc_sel.items() <= labels.items()
    assert [p["port"] for p in children["Service/llama"]["spec"]["ports"]] == [8000, 9090]


def test_controller_setting_change_changes_the_pod_template() -> None:
    before = plan(spec())["Deployment/llama-stable"]["spec"]["template"]
    after = plan(spec(controller={"maxLookahead": 12}))["Deployment/llama-stable"]["spec"]["template"]
    assert before != after
    cm = plan(spec(controller={"maxLookahead": 12}))["ConfigMap/llama-controller"]
    assert "maxLookahead: 12" in cm["data"]["controller.yaml"]


def test_builders_are_deterministic() -> None:
    assert plan(spec()) == plan(spec())


def test_engine_and_tolerations_reach_the_pod() -> None:
    s = spec(runtime={"engine": "vllm", "tolerations": [{"key": "gpu", "operator": "Exists"}]})
    pod = plan(s)["Deployment/llama-stable"]["spec"]["template"]["spec"]
    assert "--engine=vllm" in pod["containers"][0]["args"]
    assert pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
