"""The command line builds without heavy imports and never shadows the standard library."""

from __future__ import annotations

import operator
import subprocess
import sys

from adaspec.cli.main import build_parser


def test_stdlib_operator_is_not_shadowed() -> None:
    assert operator.__file__ is not None
    assert "adaspec" not in operator.__file__
    assert operator.add(2, 3) == 5


def test_help_lists_commands_without_importing_torch() -> None:
    code = (
        "import sys; from adaspec.cli.main import build_parser; build_parser();print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parser_requires_a_command() -> None:
    parser = build_parser()
    try:
        parser.parse_args([])
    except SystemExit as exc:
        assert exc.code == 2
    else:
        raise AssertionError("a missing command must be an error")
