"""Entry point of the `adaspec` command; each part registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from adaspec.cli.errors import CommandError

__all__ = ["CommandError", "build_parser", "main"]

# Modules that define `register(subparsers) -> None`. They must import heavy dependencies (torch,
# kopf, sqlalchemy) only inside their command handlers, so that `adaspec --help` works in every
# image (the operator image has no torch).
COMMAND_MODULES: tuple[str, ...] = (
    "adaspec.runtime.cli",
    "adaspec.runtime.server.cli",
    "adaspec.runtime.adapt.cli",
    "adaspec.runtime.up.cli",
    "adaspec.runtime.demo.cli",
    "adaspec.operator.cli",
    "adaspec.controlplane.cli",
    "adaspec.devcluster.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every available part's subcommands."""
    parser = argparse.ArgumentParser(
        prog="adaspec",
        description="Adaptive speculative decoding, run as a fleet on Kubernetes.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part is not in this distribution
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except CommandError as exc:
        print(f"adaspec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
