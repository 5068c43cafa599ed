"""The Dockerfile (which cannot be built here) copies paths that exist and runs entrypoints that exist."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

from adaspec.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[3]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"use the exec form: {rest}"
    return [str(v) for v in value]


def test_every_copied_path_exists() -> None:
    copies = [rest for word, rest in instructions() if word == "COPY"]
    assert copies
    for rest in copies:
        args = [a for a in shlex.split(rest) if not a.startswith("--")]
        for src in args[:-1]:
            assert (ROOT / src).exists(), f"COPY {src}: no such path"


def test_every_packaged_folder_is_copied() -> None:
    """Both images install the wheel, so each folder of the namespace package must be in the build context."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    copied = set()
    for word, rest in instructions():
        if word == "COPY":
            args = [a for a in shlex.split(rest) if not a.startswith("--")]
            copied |= {src.rstrip("/") for src in args[:-1]}
    for package in wheel["packages"]:
        top = package.split("/")[0]
        assert top in copied or package in copied, f"{package} is packaged but not COPY'd into the image"


def test_targets_and_entrypoints_exist() -> None:
    froms = [re.search(r"\bAS (\S+)", r) for w, r in instructions() if w == "FROM"]
    stages = {m.group(1) for m in froms if m}
    assert {"operator", "runtime"} <= stages
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for word, rest in instructions():
        if word == "ENTRYPOINT":
            assert exec_form(rest)[0] in scripts
    commands = {a.dest: a for a in build_parser()._subparsers._actions if a.dest == "command"}  # noqa: SLF001
    names = set(commands["command"].choices)
    for word, rest in instructions():
        if word == "CMD":
            first = exec_form(rest)[0]
            assert first.startswith("-") or first in names, f"CMD {first}: no such adaspec subcommand"


def test_images_run_as_non_root() -> None:
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and all(u not in ("0", "root") for u in users)


@pytest.mark.parametrize("argv", [["operator", "--help"]])
def test_operator_subcommands_are_registered(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 0
    assert "usage: adaspec" in capsys.readouterr().out


def test_peering_priority_is_an_integer_or_derived_from_the_host() -> None:
    import argparse

    from adaspec.operator.cli import peering_priority

    assert peering_priority("7") == 7
    a, b = peering_priority("auto", "op-6d4f-abcde"), peering_priority("auto", "op-6d4f-fghij")
    assert a != b and a > 0 and b > 0
    assert peering_priority("auto", "op-6d4f-abcde") == a
    with pytest.raises(argparse.ArgumentTypeError, match="--priority"):
        peering_priority("high")
