"""Subcommands of the runtime part: generate, fixtures, bench micro (registered by adaspec.cli.main).

Only argument parsing lives here; handlers import torch lazily so `adaspec --help` stays light.
"""

from __future__ import annotations

import argparse
from typing import Any

from adaspec.cli.argtypes import positive_int
from adaspec.runtime.strategies import STRATEGY_NAMES


def _generate(args: argparse.Namespace) -> int:
    from adaspec.runtime.commands import run_generate

    return run_generate(args)


def _fixtures(args: argparse.Namespace) -> int:
    from adaspec.runtime.commands import run_fixtures

    return run_fixtures(args)


def _bench_micro(args: argparse.Namespace) -> int:
    from adaspec.runtime.microbench import run_micro

    return run_micro(args)


def register(sub: Any) -> None:
    """Add the runtime's subcommands to the `adaspec` parser."""
    g = sub.add_parser("generate", help="generate text with (hybrid) speculative decoding")
    g.add_argument("--target", required=True, help="target model directory (Hugging Face, safetensors)")
    g.add_argument("--static-draft", help="static draft model directory (same tokenizer as the target)")
    g.add_argument("--strategy", default="hybrid", choices=STRATEGY_NAMES)
    g.add_argument("--adaptive-revision", help="start the adaptive draft from this saved revision directory")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", help="file holding the prompt text")
    g.add_argument("--max-new-tokens", type=positive_int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--tag", default=None, help="workload tag (keys the suffix index)")
    g.add_argument("--device", default="cpu")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=_generate)

    f = sub.add_parser("fixtures", help="train (or reuse) the tiny fixture target and draft models")
    f.add_argument("--out", required=True, help="directory to write target/ and draft/ into")
    f.set_defaults(func=_fixtures)

    b = sub.add_parser("bench", help="benchmarks")
    bsub = b.add_subparsers(dest="bench", metavar="BENCH")
    bsub.required = True
    m = bsub.add_parser("micro", help="every strategy side by side on the fixture models")
    m.add_argument("--prompts", type=positive_int, default=12, help="prompts per language")
    m.add_argument("--max-new-tokens", type=positive_int, default=48)
    m.add_argument("--strategies", default=",".join(STRATEGY_NAMES))
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_bench_micro)

    # Issue 3 (drift benchmark on SmolLM2): parsers live beside their code, still without heavy imports.
    from adaspec.runtime.bench.args import (
        add_drift_parser,
        add_replay_parser,
        add_serve_bench_parser,
        add_train_draft_parser,
    )

    add_train_draft_parser(sub)
    add_drift_parser(bsub)
    add_replay_parser(bsub)
    add_serve_bench_parser(bsub)
