"""`adaspec up` (registered by adaspec.cli.main): the whole fleet on one machine; no heavy imports here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _up(args: argparse.Namespace) -> int:
    from adaspec.runtime.up.main import run_up

    return run_up(args)


def add_up_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `up` to the `adaspec` subcommands; return its parser."""
    u = sub.add_parser(
        "up",
        help="the whole fleet on one machine: stable and canary runtimes, control plane, one endpoint",
        description="Start a stable and a canary `adaspec serve`, the control plane (SQLite in the state "
        "dir, the local actuator running `adaspec adapt`), and one OpenAI endpoint splitting traffic "
        "between the runtimes, with the control plane's API on the same port. SIGTERM or ^C stops all.",
    )
    u.add_argument("--config", type=Path, help="YAML settings (adaspec.runtime.up.config.UpSettings)")
    u.add_argument(
        "--target-model", help="target model: a directory or file:// URI (required here or in --config)"
    )
    u.add_argument(
        "--static-draft", help="static draft: a directory or file:// URI (required here or in --config)"
    )
    u.add_argument(
        "--state-dir", type=Path, help="runtimes' state, capture, runs, SQLite (default ./adaspec-state)"
    )
    u.add_argument("--host", help="address of the front endpoint (default 127.0.0.1)")
    u.add_argument("--port", type=int, help="port of the front endpoint (default 8000; 0: a free one)")
    u.add_argument("--preset", choices=("default", "demo"), help="control plane intervals and policies")
    u.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    u.set_defaults(func=_up)
    parser: argparse.ArgumentParser = u
    return parser


def register(sub: Any) -> None:
    """Add `up` to the `adaspec` parser."""
    add_up_parser(sub)
