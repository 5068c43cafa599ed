"""Builders turn a spec into the children an AdaptiveSpeculator owns (no cluster needed)."""

from __future__ import annotations

from typing import Any

import pytest

from adaspec.cli.main import build_parser
from adaspec.operator import builders
from adaspec.operator.builders import Artifact, Owner
from adaspec.operator.models import AdaptiveSpeculatorSpec
from adaspec.runtime.settings import RuntimeSettings, duration_seconds, parse_settings

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


def runtime_container(s: AdaptiveSpeculatorSpec) -> dict[str, Any]:
    pod = plan(s)["Deployment/llama-stable"]["spec"]["template"]["spec"]
    container: dict[str, Any] = pod["containers"][0]
    return container


def test_startup_probe_waits_the_startup_timeout_then_readiness_takes_over() -> None:
    c = runtime_container(spec())
    health = {"path": "/health", "port": "http"}
    assert c["startupProbe"] == {"httpGet": health, "periodSeconds": 10, "failureThreshold": 90}  # 15m
    assert c["readinessProbe"] == {"httpGet": health, "periodSeconds": 5}
    assert {p["name"] for p in c["ports"]} >= {"http"}


@pytest.mark.parametrize(
    ("timeout", "threshold"), [("1h", 360), ("90s", 9), ("95s", 10), ("1m30s", 9), ("1s", 1)]
)
def test_startup_timeout_becomes_the_failure_threshold(timeout: str, threshold: int) -> None:
    c = runtime_container(spec(runtime={"startupTimeout": timeout}))
    probe = c["startupProbe"]
    assert probe["failureThreshold"] == threshold
    assert probe["failureThreshold"] * probe["periodSeconds"] >= duration_seconds(timeout)


def test_no_liveness_probe_that_could_kill_a_draining_pod() -> None:
    """/health answers 503 while the runtime drains after SIGTERM; a liveness probe there would kill it."""
    assert "livenessProbe" not in runtime_container(spec())


def test_termination_grace_covers_the_runtime_drain() -> None:
    pod = plan(spec())["Deployment/llama-stable"]["spec"]["template"]["spec"]
    serve = build_parser().parse_args(builders.runtime_args(spec(), STATIC, "stable"))
    assert pod["terminationGracePeriodSeconds"] >= serve.shutdown_grace + 5


def test_duration_seconds_reads_go_durations_and_names_a_bad_one() -> None:
    assert duration_seconds("15m") == 900
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("1.5s") == 1.5
    assert duration_seconds("250ms") == 0.25
    with pytest.raises(ValueError, match="'15 minutes'"):
        duration_seconds("15 minutes")


EVERY_SETTING: dict[str, dict[str, Any]] = {
    "controller": {"minLookahead": 2, "maxLookahead": 12, "confidenceThreshold": 0.35, "exploration": 0.1},
    "adaptive": {
        "enabled": False,
        "learningRate": 0.0005,
        "stepsPerRequest": 2,
        "bufferSize": 128,
        "batchSize": 8,
        "computeShare": 0.5,
    },
    "capture": {"enabled": True, "sampleRate": 0.5, "maxBytes": 1 << 24, "retention": "24h"},
}


@pytest.mark.parametrize("overrides", [{}, EVERY_SETTING], ids=["defaults", "every-setting"])
def test_configmap_parses_with_the_runtime_into_the_spec_settings(overrides: dict[str, Any]) -> None:
    s = spec(**overrides)
    text = plan(s)["ConfigMap/llama-controller"]["data"]["controller.yaml"]
    settings = parse_settings(text, "controller.yaml")
    assert settings.controller == s.controller
    assert settings.adaptive == s.adaptive
    assert settings.capture == s.capture
    assert settings == RuntimeSettings(controller=s.controller, adaptive=s.adaptive, capture=s.capture)


def test_every_setting_case_sets_every_runtime_setting_to_a_non_default() -> None:
    """The round trip above is only as good as its case: every field differs from the default."""
    defaults = RuntimeSettings().model_dump(by_alias=True)
    assert {k: set(v) for k, v in EVERY_SETTING.items()} == {k: set(v) for k, v in defaults.items()}
    for section, values in EVERY_SETTING.items():
        for key, value in values.items():
            assert defaults[section][key] != value, f"{section}.{key}"
