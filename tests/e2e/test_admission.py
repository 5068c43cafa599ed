"""Bad AdaptiveSpeculators are rejected at admission by the CRD schema and CEL, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest


def speculator(name: str, spec: dict[str, Any]) -> str:
    return json.dumps(
        {
            "apiVersion": "adaspec.dev/v1alpha1",
            "kind": "AdaptiveSpeculator",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }
    )


TARGET = {"targetModel": {"uri": "hf://m"}}

BAD = [
    ("negative-lookahead", {**TARGET, "controller": {"minLookahead": -1}}, "spec.controller.minLookahead"),
    (
        "inverted-lookahead",
        {**TARGET, "controller": {"minLookahead": 8, "maxLookahead": 2}},
        "spec.controller.minLookahead",
    ),
    ("no-target", {"runtime": {"replicas": 1}}, "spec.targetModel"),
    ("no-target-uri", {"targetModel": {"tokenizer": "t"}}, "spec.targetModel.uri"),
    ("unknown-field", {**TARGET, "speculatorr": {}}, 'unknown field "spec.speculatorr"'),
    ("replicas-string", {**TARGET, "runtime": {"replicas": "two"}}, "spec.runtime.replicas"),
    ("replicas-float", {**TARGET, "runtime": {"replicas": 1.5}}, "spec.runtime.replicas"),
    ("bad-cron", {**TARGET, "adaptation": {"schedule": "every hour"}}, "spec.adaptation.schedule"),
    ("failure-limit-zero", {**TARGET, "promotion": {"failureLimit": 0}}, "spec.promotion.failureLimit"),
    ("failure-limit-negative", {**TARGET, "promotion": {"failureLimit": -2}}, "spec.promotion.failureLimit"),
]


@pytest.mark.parametrize(("name", "spec", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_naming_the_field(
    installed: Any, name: str, spec: dict[str, Any], field: str
) -> None:
    proc = installed.kubectl("apply", "-f", "-", stdin=speculator(f"bad-{name}", spec), check=False)
    assert proc.returncode != 0, proc.stdout
    assert field in proc.stderr
    assert installed.kubectl("get", "aspec", f"bad-{name}", "-n", "default", check=False).returncode != 0


def test_minimal_speculator_is_accepted_and_defaulted(installed: Any) -> None:
    proc = installed.kubectl(
        "apply", "--dry-run=server", "-o", "json", "-f", "-", stdin=speculator("minimal", TARGET)
    )
    spec = json.loads(proc.stdout)["spec"]
    # the runtime's own defaults (adaspec.runtime.settings), applied by the API server from the CRD
    assert spec["controller"] == {
        "minLookahead": 0,
        "maxLookahead": 8,
        "confidenceThreshold": 0.2,
        "exploration": 0.03,
    }
    assert spec["capture"]["enabled"] is False
    assert spec["runtime"]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert spec["promotion"]["failureLimit"] == 3
