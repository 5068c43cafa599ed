"""The runtime container's args parse with the real `adaspec serve` parser into what the spec says."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import pytest

from adaspec.cli.main import build_parser
from adaspec.operator import builders
from adaspec.operator.builders import Artifact, Role
from adaspec.operator.models import AdaptiveSpeculatorSpec
from adaspec.runtime.server.cli import add_serve_parser

SHA = "0123456789abcdef" * 4


def spec(tokenizer: str, static_draft: str, engine: str) -> AdaptiveSpeculatorSpec:
    return AdaptiveSpeculatorSpec.model_validate(
        {
            "targetModel": {"uri": "file:///models/target", "tokenizer": tokenizer},
            "staticDraft": {"uri": static_draft},
            "runtime": {"engine": engine},
        }
    )


ARTIFACTS = [
    Artifact(revision="static", uri=""),
    Artifact(revision="static", uri="file:///models/draft"),
    Artifact(revision="r7", uri="file:///artifacts/llama/r7"),
    Artifact(revision="r7", uri="file:///artifacts/llama/r7", sha256=SHA, phase="Canary"),
]

ROLES: tuple[Role, ...] = ("stable", "canary")
SPECS = [
    spec("", "", "native"),
    spec("file:///models/tokenizer", "", "native"),
    spec("", "file:///models/draft", "vllm"),
    spec("file:///models/tokenizer", "file:///models/draft=v2", "vllm"),
]
COMBOS = list(itertools.product(SPECS, ARTIFACTS, ROLES))
CASES = [
    pytest.param(
        s,
        artifact,
        role,
        id=f"{s.runtime.engine}-tok{int(bool(s.target_model.tokenizer))}-draft{int(bool(s.static_draft.uri))}"
        f"-{artifact.revision}-uri{int(bool(artifact.uri))}-sha{int(bool(artifact.sha256))}-{role}",
    )
    for s, artifact, role in COMBOS
]


def serve_only_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaspec")
    sub = parser.add_subparsers(dest="command")
    add_serve_parser(sub)
    return parser


def expected(s: AdaptiveSpeculatorSpec, artifact: Artifact, role: Role) -> dict[str, Any]:
    return {
        "command": "serve",
        "host": "0.0.0.0",
        "port": builders.API_PORT,
        "metrics_port": builders.METRICS_PORT,
        "engine": s.runtime.engine,
        "strategy": s.runtime.strategy,
        "target_model": s.target_model.uri,
        "tokenizer": s.target_model.tokenizer,
        "static_draft": s.static_draft.uri,
        "draft_revision": artifact.revision,
        "role": role,
        "draft_artifact": artifact.uri,
        "draft_sha256": artifact.sha256,
        "controller_config": "/etc/adaspec/controller.yaml",
    }


@pytest.mark.parametrize(("s", "artifact", "role"), CASES)
@pytest.mark.parametrize("parser", [build_parser, serve_only_parser], ids=["adaspec", "serve-only"])
def test_runtime_args_parse_into_what_the_spec_says(
    parser: Any, s: AdaptiveSpeculatorSpec, artifact: Artifact, role: Role
) -> None:
    args = parser().parse_args(builders.runtime_args(s, artifact, role))
    want = expected(s, artifact, role)
    assert {k: getattr(args, k) for k in want} == want


def test_the_mounted_config_file_is_the_one_passed() -> None:
    s = spec("", "", "native")
    dep = builders.build_deployment(builders.Owner("a", "ns", "u"), s, ARTIFACTS[0], "stable", "h")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    args = build_parser().parse_args(container["args"])
    assert container["command"] == ["adaspec"]
    assert args.controller_config == f"{mount['mountPath']}/{builders.CONFIG_FILE}"


def serve_option_strings() -> set[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    return {o for action in add_serve_parser(sub)._actions for o in action.option_strings}


def test_each_flag_is_a_full_serve_option_given_once() -> None:
    """argparse accepts abbreviations (`--draft-sha`); the builder must spell every flag out."""
    known = serve_option_strings()
    for s, artifact, role in COMBOS:
        args = builders.runtime_args(s, artifact, role)
        flags = [a.split("=", 1)[0] for a in args[1:]]
        assert len(flags) == len(set(flags)), args
        assert set(flags) <= known, set(flags) - known


def test_unset_fields_are_left_to_the_parser_default() -> None:
    args = builders.runtime_args(spec("", "", "native"), ARTIFACTS[0], "stable")
    flags = {a.split("=", 1)[0] for a in args[1:]}
    assert not {"--tokenizer", "--static-draft", "--draft-artifact", "--draft-sha256"} & flags


def test_the_serve_parser_rejects_what_the_builder_must_not_emit() -> None:
    """The seam can fail: a flag the serve parser lacks, or a bad choice, is an error."""
    base = builders.runtime_args(spec("", "", "native"), ARTIFACTS[0], "stable")
    for bad in (["--draft-checksum=abc"], ["--role=shadow"], ["--engine=tgi"], ["--port=0"]):
        with pytest.raises(SystemExit):
            serve_only_parser().parse_args(base + bad)


def test_with_a_storage_claim_capture_goes_to_a_per_pod_directory_on_the_claim() -> None:
    s = AdaptiveSpeculatorSpec.model_validate(
        {"targetModel": {"uri": "file:///models/target"}, "storage": {"claimName": "fleet-data"}}
    )
    dep = builders.build_deployment(builders.Owner("a", "ns", "u"), s, ARTIFACTS[0], "stable", "h")
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "storage"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "storage"]
    assert volume["persistentVolumeClaim"] == {"claimName": "fleet-data"}
    args = build_parser().parse_args(container["args"])
    # `$(POD_NAME)` is expanded by the kubelet from the env the container declares
    assert args.capture_dir == f"{mount['mountPath']}/{builders.CAPTURE_SUBDIR}/$(POD_NAME)"
    (env,) = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_without_a_storage_claim_capture_stays_in_the_pod() -> None:
    dep = builders.build_deployment(
        builders.Owner("a", "ns", "u"), spec("", "", "native"), ARTIFACTS[0], "stable", "h"
    )
    pod = dep["spec"]["template"]["spec"]
    assert "storage" not in {v["name"] for v in pod["volumes"]}
    assert build_parser().parse_args(pod["containers"][0]["args"]).capture_dir == ""
