"""The parser of `adaspec adapt` (no heavy imports; the control plane's actuators build this argv)."""

from __future__ import annotations

import argparse
from typing import Any

from adaspec.cli.argtypes import positive_float, positive_int

# Exit codes (docs/CONTRACTS.md, "adaspec adapt").
EXIT_CANDIDATE = 0  # a candidate passed the gate and was written (and registered when asked)
EXIT_BAD_INPUT = 2  # bad flags, no traffic in the window, a corrupt shard, a mismatched tokenizer
EXIT_GATED = 3  # the candidate did not pass the offline gate: nothing written


def _adapt(args: argparse.Namespace) -> int:
    from adaspec.runtime.adapt.run import run_adapt

    return run_adapt(args)


def fraction(text: str) -> float:
    """A number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def add_adapt_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `adaspec adapt`; return its parser."""
    a = sub.add_parser(
        "adapt",
        help="distil a candidate draft revision from captured traffic and gate it offline by replay",
        description="Exit codes: 0 candidate written, 2 bad input, 3 refused by the offline gate.",
    )
    a.add_argument("--speculator", default="", help="speculator name (recorded; used when registering)")
    a.add_argument("--run-id", default="", help="adaptation run id (recorded in the manifest)")
    a.add_argument("--out", required=True, help="revision directory to write (only if the gate passes)")
    a.add_argument("--target-model", required=True, help="target model directory or file:// URI")
    a.add_argument("--capture", required=True, help="captured traffic: a directory or file:// URI")
    a.add_argument("--parent", default="static", help="parent revision id")
    a.add_argument("--parent-artifact", default="", help="parent revision (or static draft) directory")
    a.add_argument("--revision", default="", help="id of the candidate (default: derived from the run id)")
    window = a.add_mutually_exclusive_group()
    window.add_argument("--since", type=float, default=None, help="only traffic at or after this unix time")
    window.add_argument("--last", type=positive_int, default=None, help="only the last N captured requests")
    a.add_argument("--heldout-fraction", type=fraction, default=0.25, help="requests kept for the replay")
    a.add_argument("--min-heldout", type=positive_int, default=4, help="fewest held-out requests to judge")
    a.add_argument(
        "--min-improvement", type=float, default=0.02, help="acceptance rate over the parent's the gate needs"
    )
    a.add_argument("--steps", type=positive_int, default=200, help="optimisation steps (the recipe)")
    a.add_argument("--time-budget", type=positive_float, default=900.0, help="seconds; a cap on training")
    a.add_argument("--lr", type=positive_float, default=2e-3)
    a.add_argument(
        "--window", type=positive_int, default=128, help="tokens of a captured request per training step"
    )
    a.add_argument("--lookahead", type=positive_int, default=4, help="draft tokens per step in the replay")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--device", default="cpu")
    a.add_argument("--register-url", default="", help="control plane base URL: POST the candidate there")
    a.add_argument("--token-file", default="", help="bearer token for --register-url")
    a.add_argument(
        "--artifact-uri",
        default="",
        help="the URI the candidate is registered under, where runtimes load it from (e.g. storage:///... "
        "on a shared claim); default: --out as a file:// URI",
    )
    a.add_argument("--json", action="store_true", help="print the result as one JSON object")
    a.set_defaults(func=_adapt)
    parser: argparse.ArgumentParser = a
    return parser


def register(sub: Any) -> None:
    """Add `adapt` to the `adaspec` parser."""
    add_adapt_parser(sub)
