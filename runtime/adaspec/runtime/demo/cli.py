"""`adaspec demo` (registered by adaspec.cli.main): the one-machine fleet shown live; imports are lazy."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from adaspec.cli.argtypes import positive_int


def _demo(args: argparse.Namespace) -> int:
    from adaspec.runtime.demo.main import run_demo

    return run_demo(args)


def register(sub: Any) -> None:
    """Add `demo` to the `adaspec` subcommands."""
    d = sub.add_parser(
        "demo",
        help="the closed loop on one machine, live: traffic shifts language, the fleet adapts",
        description="Run `adaspec up` on SmolLM2-135M (or the fixture models), send code completions from "
        "real source files through its OpenAI endpoint (Python, then another language), and show live "
        "what the control plane sees and decides: acceptance per revision, drift, the adaptation run "
        "and its offline gate, the canary and its promotion or rejection. Ends with a summary table "
        "and a plot of acceptance over time with the decisions marked.",
    )
    d.add_argument("--target", default="smollm2", help="smollm2 (converted once, cached) or a model dir")
    d.add_argument(
        "--static-draft", default="", help="draft dir (default: train-draft's Python draft, cached)"
    )
    d.add_argument("--fixtures", action="store_true", help="the tiny fixture models: a quick look")
    d.add_argument("--out", type=Path, default=Path("build/demo"), help="report, plot, state (wiped)")
    d.add_argument("--shift-to", default="go", help="language of the second phase (default go)")
    d.add_argument(
        "--shift-files", type=positive_int, default=8, help="files of the new language the traffic comes from"
    )
    d.add_argument(
        "--python-requests",
        type=positive_int,
        default=24,
        help="requests before the shift (at least: more until the drift reference is made)",
    )
    d.add_argument(
        "--after-requests", type=positive_int, default=16, help="requests after the promotion or rejection"
    )
    d.add_argument("--max-requests", type=positive_int, default=2000, help="cap on requests in all")
    d.add_argument("--max-tokens", type=positive_int, default=48, help="tokens per completion")
    d.add_argument("--time-limit", type=positive_int, default=1800, help="seconds; the demo stops there")
    d.add_argument("--draft-budget-minutes", type=float, default=60.0, help="static draft training cap")
    d.add_argument(
        "--adapting-pause",
        type=float,
        default=10.0,
        help="seconds between requests while an adaptation run is in flight (it shares the CPU); 0: none",
    )
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
