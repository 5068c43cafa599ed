"""Parsers and handlers for `adaspec train-draft`, `bench drift` and `bench serve` (no heavy imports)."""

from __future__ import annotations

import argparse
from typing import Any

from adaspec.cli.argtypes import positive_float, positive_int
from adaspec.runtime.bench.constants import DRIFT_STRATEGIES, PRETRAINED_ALIAS
from adaspec.runtime.strategies import STRATEGY_NAMES


def _train_draft(args: argparse.Namespace) -> int:
    from adaspec.runtime.bench.commands import run_train_draft

    return run_train_draft(args)


def _bench_drift(args: argparse.Namespace) -> int:
    from adaspec.runtime.bench.drift import run_from_args

    return run_from_args(args)


def _bench_replay(args: argparse.Namespace) -> int:
    from adaspec.runtime.bench.replay import run_from_args

    return run_from_args(args)


def _bench_serve(args: argparse.Namespace) -> int:
    from adaspec.runtime.bench.serve import run_from_args

    return run_from_args(args)


def add_train_draft_parser(sub: Any) -> None:
    """Register `adaspec train-draft`."""
    t = sub.add_parser("train-draft", help="distil a small draft from the target on one language's sources")
    t.add_argument("--target", required=True, help=f"target model directory, or {PRETRAINED_ALIAS!r}")
    t.add_argument(
        "--corpus",
        required=True,
        metavar="LANG=PATH",
        help="the sources to distil on: LANG=PATH for a known language (e.g. python=/usr/lib/python3), "
        "LANG:.EXT,...=PATH for any other (e.g. perl:.pl,.pm=/src)",
    )
    t.add_argument(
        "--out", required=True, help="draft directory to write (reused when the recipe hash matches)"
    )
    t.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="optimisation steps: they end training and drive the LR schedule (default: the recipe's, 450)",
    )
    t.add_argument(
        "--budget-minutes",
        type=positive_float,
        default=None,
        help="wall-clock cap on training (default 60); hit first, it stops training short and says so",
    )
    t.add_argument(
        "--arch",
        choices=("llama", "feature"),
        default="llama",
        help="llama: the target cut to --layers layers (the static draft); feature: one EAGLE layer over the "
        "target's features with a reduced vocabulary (the feature strategies start from it)",
    )
    t.add_argument("--layers", type=positive_int, default=2, help="draft transformer layers (llama)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true", help="print the manifest's report as JSON")
    t.set_defaults(func=_train_draft)


def add_drift_parser(bench_sub: Any) -> None:
    """Register `adaspec bench drift`."""
    d = bench_sub.add_parser("drift", help="workload drift on SmolLM2: static vs adaptive vs peers")
    d.add_argument("--quick", action="store_true", help="a short run (fewer, shorter requests)")
    d.add_argument(
        "--corpus",
        action="append",
        default=None,
        metavar="LANG=PATH",
        help="a phase, repeatable, in order (default: Python stdlib, Go sources, JDK src.zip); "
        "LANG:.EXT,...=PATH for a language not known (e.g. perl:.pl,.pm=/src)",
    )
    d.add_argument("--requests-per-phase", type=positive_int, default=None)
    d.add_argument("--max-new-tokens", type=positive_int, default=None)
    d.add_argument(
        "--strategies",
        default=",".join(DRIFT_STRATEGIES),
        help=f"comma-separated, from: {', '.join(DRIFT_STRATEGIES)}",
    )
    d.add_argument(
        "--out", default="bench/results/drift", help="directory for results.json, drift.png, report.md"
    )
    d.add_argument(
        "--target", default=PRETRAINED_ALIAS, help=f"target model directory, or {PRETRAINED_ALIAS!r}"
    )
    d.add_argument(
        "--static-draft", default=None, help="draft directory (default: train-draft's recipe, cached)"
    )
    d.add_argument(
        "--feature-draft",
        default=None,
        help="feature draft directory for feature, hybrid-feature (default: train-draft --arch feature's "
        "recipe, cached)",
    )
    d.add_argument(
        "--draft-budget-minutes",
        type=positive_float,
        default=60.0,
        help="time cap on training each default draft (static, feature) when it must be trained first",
    )
    d.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 lossless sampling")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_bench_drift)


def add_replay_parser(bench_sub: Any) -> None:
    """Register `adaspec bench replay`."""
    r = bench_sub.add_parser(
        "replay",
        help="replay a greedy bench drift run's requests with model-free strategies, without the target",
    )
    r.add_argument("run", help="a bench drift --out directory (traces.jsonl and results.json)")
    r.add_argument(
        "--strategies",
        default="suffix,ngram,arctic-suffix",
        help="comma-separated; replayable: those of suffix, ngram, arctic-suffix and static",
    )
    r.add_argument(
        "--fixed-k",
        action="append",
        metavar="STRATEGY=K",
        help="lookahead per strategy, repeatable (default: bench drift's; K = 0: under the controller)",
    )
    r.add_argument(
        "--max-lookahead",
        type=positive_int,
        default=None,
        help="the controller's maximum lookahead (default: the runtime's)",
    )
    r.add_argument("--static-draft", default=None, help="the run's static draft, for strategies with static")
    r.add_argument("--json", action="store_true", help="print the figures as JSON")
    r.set_defaults(func=_bench_replay)


def add_serve_bench_parser(bench_sub: Any) -> None:
    """Register `adaspec bench serve`."""
    s = bench_sub.add_parser(
        "serve", help="adaspec serve over HTTP vs its engine in-process: tokens/s, TTFT, ITL per concurrency"
    )
    s.add_argument("--strategy", default="hybrid", choices=STRATEGY_NAMES)
    s.add_argument("--prompts", type=positive_int, default=16, help="requests per row (path, concurrency)")
    s.add_argument("--max-tokens", type=positive_int, default=32, help="max_tokens of every request")
    s.add_argument("--concurrency", default="1,4,16", help="comma-separated client counts, in order")
    s.add_argument(
        "--pretrained",
        choices=(PRETRAINED_ALIAS,),
        default=None,
        help="SmolLM2-135M and bench drift's static draft (default: the fixture models)",
    )
    s.add_argument("--out", default=None, help="directory for results.json, report.md and serve.log")
    s.add_argument("--seed", type=int, default=0, help="which held-out prompts are cut")
    s.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    s.set_defaults(func=_bench_serve)
