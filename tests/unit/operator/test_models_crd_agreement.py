"""The Pydantic models and the CRD schemas in crds/ describe the same fields, types, bounds, defaults and
descriptions (spec.controller, spec.adaptive and spec.capture are the runtime's own settings models)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from adaspec.operator import models
from adaspec.runtime.settings import AdaptiveSettings, CaptureSettings, ControllerSettings

CRDS = Path(__file__).resolve().parents[3] / "crds"


def crd_version_schema(filename: str) -> dict[str, Any]:
    doc = yaml.safe_load((CRDS / filename).read_text())
    (version,) = doc["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _is_scalar(value: Any) -> bool:
    """Whether a default is compared field by field; objects and lists are compared by
    test_model_defaults_equal_crd_defaults, since Pydantic's JSON schema omits `default_factory` defaults."""
    return value is not None and not isinstance(value, dict | list)


def norm_crd(s: dict[str, Any]) -> dict[str, Any]:
    """Reduce a CRD schema node to what a Pydantic JSON schema can also express."""
    out: dict[str, Any] = {}
    if s.get("x-kubernetes-int-or-string"):
        out["type"] = "int-or-string"
    else:
        out["type"] = s["type"]
    for key in ("enum", "pattern", "minLength", "maxLength"):
        if key in s:
            out[key] = s[key]
    # OpenAPI v3.0 (CRDs) states an open bound as `minimum: x, exclusiveMinimum: true`; JSON Schema 2020-12
    # (Pydantic) as `exclusiveMinimum: x`.
    if "minimum" in s:
        out["exclusiveMinimum" if s.get("exclusiveMinimum") else "minimum"] = s["minimum"]
    if "maximum" in s:
        out["exclusiveMaximum" if s.get("exclusiveMaximum") else "maximum"] = s["maximum"]
    if _is_scalar(s.get("default")):
        out["default"] = s["default"]
    if "properties" in s:
        out["properties"] = {k: norm_crd(v) for k, v in s["properties"].items()}
        out["required"] = sorted(s.get("required", []))
    if "items" in s:
        out["items"] = norm_crd(s["items"])
    if isinstance(s.get("additionalProperties"), dict):
        out["additionalProperties"] = norm_crd(s["additionalProperties"])
    return out


def norm_model(s: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Reduce a Pydantic JSON schema node (refs resolved, Optional unwrapped) to the same shape."""
    if "$ref" in s:
        return norm_model(defs[s["$ref"].split("/")[-1]], defs)
    if "anyOf" in s:
        branches = [b for b in s["anyOf"] if b.get("type") != "null"]
        if len(branches) == 1:
            return norm_model(branches[0], defs)
        types = sorted(b.get("type", "") for b in branches)
        assert types == ["integer", "string"], s
        out: dict[str, Any] = {"type": "int-or-string"}
        out.update({k: v for b in branches for k, v in b.items() if k == "pattern"})
        return out
    if "const" in s:
        return {"type": "string", "enum": [s["const"]]}
    out = {"type": s["type"]}
    for key in ("enum", "pattern", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"):
        if key in s:
            out[key] = s[key]
    for key in ("minLength", "maxLength"):
        if key in s:
            out[key] = s[key]
    if _is_scalar(s.get("default")):
        out["default"] = s["default"]
    if s["type"] == "object" and "properties" in s:
        out["properties"] = {k: norm_model(v, defs) for k, v in s["properties"].items()}
        out["required"] = sorted(s.get("required", []))
    if "items" in s:
        out["items"] = norm_model(s["items"], defs)
    if isinstance(s.get("additionalProperties"), dict):
        out["additionalProperties"] = norm_model(s["additionalProperties"], defs)
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    js = model.model_json_schema(by_alias=True)
    return norm_model(js, js.get("$defs", {}))


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Default a value the way the API server does for a structural schema."""
    if not isinstance(value, dict) or "properties" not in schema:
        if isinstance(value, list) and "items" in schema:
            return [apply_defaults(schema["items"], v) for v in value]
        return value
    out = dict(value)
    for name, sub in schema["properties"].items():
        if name not in out and "default" in sub:
            out[name] = sub["default"]
        if name in out:
            out[name] = apply_defaults(sub, out[name])
    return out


CASES = [
    ("adaspec.dev_adaptivespeculators.yaml", "spec", models.AdaptiveSpeculatorSpec),
    ("adaspec.dev_adaptivespeculators.yaml", "status", models.AdaptiveSpeculatorStatus),
    ("adaspec.dev_speculatorrevisions.yaml", "spec", models.SpeculatorRevisionSpec),
    ("adaspec.dev_speculatorrevisions.yaml", "status", models.SpeculatorRevisionStatus),
]


@pytest.mark.parametrize(("filename", "part", "model"), CASES)
def test_model_and_crd_schema_agree(filename: str, part: str, model: type[BaseModel]) -> None:
    crd = norm_crd(crd_version_schema(filename)["properties"][part])
    assert model_schema(model) == crd


@pytest.mark.parametrize(
    ("filename", "model", "minimal"),
    [
        (
            "adaspec.dev_adaptivespeculators.yaml",
            models.AdaptiveSpeculatorSpec,
            {"targetModel": {"uri": "m"}},
        ),
        (
            "adaspec.dev_speculatorrevisions.yaml",
            models.SpeculatorRevisionSpec,
            {"speculator": "s", "revision": "r1", "artifactUri": "file:///a"},
        ),
    ],
)
def test_model_defaults_equal_crd_defaults(
    filename: str, model: type[BaseModel], minimal: dict[str, Any]
) -> None:
    crd_spec = crd_version_schema(filename)["properties"]["spec"]
    defaulted = apply_defaults(crd_spec, minimal)
    assert model.model_validate(minimal).model_dump(by_alias=True, exclude_none=True) == defaulted


def test_every_crd_field_has_a_description() -> None:
    missing: list[str] = []

    def walk(s: dict[str, Any], path: str) -> None:
        for name, sub in s.get("properties", {}).items():
            described = isinstance(sub.get("description"), str) and sub["description"]
            if not described and path and name not in ("apiVersion", "kind", "metadata"):
                missing.append(f"{path}.{name}")
            walk(sub, f"{path}.{name}" if path else name)
        if "items" in s:
            walk(s["items"], path + "[]")

    for filename, _, _ in CASES[::2]:
        walk(crd_version_schema(filename), "")
    assert missing == []


def test_every_default_is_stated_in_its_description() -> None:
    """`kubectl explain` shows descriptions, not defaults: each scalar or list default is repeated there."""
    missing: list[str] = []

    def walk(s: dict[str, Any], path: str) -> None:
        if "default" in s and s["default"] != {} and "Defaults to" not in s.get("description", ""):
            missing.append(path)
        for name, sub in s.get("properties", {}).items():
            walk(sub, f"{path}.{name}")

    for filename, _, _ in CASES[::2]:
        walk(crd_version_schema(filename), "")
    assert missing == []


def model_descriptions(model: type[BaseModel]) -> dict[str, str]:
    """Return `path -> description` of every field that states its own description (not a class docstring)."""
    js = model.model_json_schema(by_alias=True)
    defs = js.get("$defs", {})
    found: dict[str, str] = {}

    def walk(s: dict[str, Any], path: str) -> None:
        if "$ref" in s:
            s = defs[s["$ref"].split("/")[-1]]
        for branch in s.get("anyOf", []):
            walk(branch, path)
        for name, sub in s.get("properties", {}).items():
            if isinstance(sub.get("description"), str):
                found[f"{path}.{name}"] = sub["description"]
            walk(sub, f"{path}.{name}")
        if "items" in s:
            walk(s["items"], path + "[]")

    walk(js, "")
    return found


def crd_node(schema: dict[str, Any], path: str) -> dict[str, Any]:
    for name in path.strip(".").split("."):
        if name.endswith("[]"):
            schema = schema["properties"][name[:-2]]["items"]
        else:
            schema = schema["properties"][name]
    return schema


@pytest.mark.parametrize(("filename", "part", "model"), CASES)
def test_crd_descriptions_start_with_the_model_descriptions(
    filename: str, part: str, model: type[BaseModel]
) -> None:
    """`kubectl explain` says what the runtime's own settings models say (then the default)."""
    crd = crd_version_schema(filename)["properties"][part]
    wrong = {
        path: (text, crd_node(crd, path).get("description", ""))
        for path, text in model_descriptions(model).items()
        if not crd_node(crd, path).get("description", "").startswith(text)
    }
    assert wrong == {}


def test_the_runtime_settings_models_are_described_field_by_field() -> None:
    """The description test above is not vacuous: it checks every controller, adaptive and capture field."""
    described = model_descriptions(models.AdaptiveSpeculatorSpec)
    for section, settings in (
        ("controller", ControllerSettings),
        ("adaptive", AdaptiveSettings),
        ("capture", CaptureSettings),
    ):
        for field in settings.model_fields.values():
            assert f".{section}.{field.alias}" in described


def test_printer_columns_read_declared_status_keys() -> None:
    doc = yaml.safe_load((CRDS / "adaspec.dev_adaptivespeculators.yaml").read_text())
    (version,) = doc["spec"]["versions"]
    names = [c["name"] for c in version["additionalPrinterColumns"]]
    assert names == ["Phase", "Stable", "Canary", "Acceptance", "Tok/s", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"].split(".")
        if path[1] == "status":
            assert path[2] in status, column


@pytest.mark.parametrize(
    ("section", "values"),
    [
        ("controller", {"confidenceThreshold": 1.0}),
        ("controller", {"minLookahead": -1}),
        ("adaptive", {"learningRate": 0}),
        ("adaptive", {"computeShare": 0}),
        ("adaptive", {"updateInterval": 64}),
        ("capture", {"retention": "a week"}),
    ],
)
def test_model_rejects_what_the_crd_rejects(section: str, values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=next(iter(values))):
        models.AdaptiveSpeculatorSpec.model_validate({"targetModel": {"uri": "m"}, section: values})


def test_model_rejects_inverted_lookahead_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="minLookahead"):
        models.AdaptiveSpeculatorSpec.model_validate(
            {"targetModel": {"uri": "m"}, "controller": {"minLookahead": 9, "maxLookahead": 2}}
        )


@pytest.mark.parametrize("schedule", ["0 */6 * * *", "@hourly", "*/5 1-3 * JAN MON-FRI", "0,30 * * * *"])
def test_cron_pattern_accepts(schedule: str) -> None:
    models.Adaptation(schedule=schedule)


@pytest.mark.parametrize("schedule", ["every hour", "* * * *", "a b c d e", "@often", "0 0 * * * *"])
def test_cron_pattern_rejects(schedule: str) -> None:
    with pytest.raises(ValidationError, match="schedule"):
        models.Adaptation(schedule=schedule)
