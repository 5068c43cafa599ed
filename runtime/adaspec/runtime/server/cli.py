"""`adaspec serve`: the parser of the process every runtime pod runs (no heavy imports here).

The operator's Deployments pass exactly these flags (`adaspec.operator.builders.runtime_args`); a unit
test feeds this parser what the builder emits, so the two never drift apart.
"""

from __future__ import annotations

import argparse
from typing import Any

from adaspec.cli.argtypes import positive_float, positive_int
from adaspec.runtime.strategies import STRATEGY_NAMES

ROLES = ("stable", "canary")
ENGINES = ("native", "vllm")


def _serve(args: argparse.Namespace) -> int:
    from adaspec.runtime.server.main import run_serve

    return run_serve(args)


def add_serve_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `serve` to the `adaspec` subcommands; return its parser."""
    s = sub.add_parser(
        "serve",
        help="serve the OpenAI API with lossless hybrid speculative decoding (the runtime pod's process)",
        description="Serve an OpenAI-compatible API (--port) and Prometheus metrics (--metrics-port).",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (the pod uses 0.0.0.0)")
    s.add_argument("--port", type=positive_int, default=8000, help="OpenAI API and /health")
    s.add_argument("--metrics-port", type=positive_int, default=9090, help="GET /metrics")
    s.add_argument("--engine", default="native", choices=ENGINES)
    s.add_argument("--target-model", required=True, help="target model: a directory or file:// URI")
    s.add_argument("--tokenizer", default="", help="tokenizer location (default: the target's)")
    s.add_argument("--static-draft", default="", help="static draft model: a directory or file:// URI")
    s.add_argument(
        "--feature-draft",
        default="",
        help="feature draft (train-draft --arch feature): a directory or file:// URI; the feature "
        "strategies start from it (default: untrained)",
    )
    s.add_argument("--draft-revision", default="static", help="id of the draft revision served")
    s.add_argument("--role", default="stable", choices=ROLES)
    s.add_argument("--draft-artifact", default="", help="revision directory or file:// URI (not for static)")
    s.add_argument("--draft-sha256", default="", help="sha256 of the revision's manifest.json")
    s.add_argument("--controller-config", default="", help="YAML: controller, adaptive, capture (camelCase)")
    s.add_argument("--strategy", default="hybrid", choices=STRATEGY_NAMES)
    s.add_argument("--served-model-name", default="", help="model id in the API (default: target's name)")
    s.add_argument("--admin-token-file", default="", help="admin bearer tokens, one per line")
    s.add_argument(
        "--state-dir",
        default="",
        help="where a generated admin token is kept (default: $XDG_STATE_HOME/adaspec/serve-PORT)",
    )
    s.add_argument(
        "--capture-dir",
        default="",
        help="captured traffic shards, when capture is enabled (default: STATE_DIR/capture)",
    )
    s.add_argument("--max-queue", type=positive_int, default=64, help="requests waiting; more get 429")
    s.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="larger bodies get 413")
    s.add_argument("--max-tokens-limit", type=positive_int, default=4096, help="largest max_tokens")
    s.add_argument("--default-max-tokens", type=positive_int, default=256)
    s.add_argument("--shutdown-grace", type=positive_float, default=20.0, help="seconds, on SIGTERM")
    s.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    s.set_defaults(func=_serve)
    parser: argparse.ArgumentParser = s
    return parser


def register(sub: Any) -> None:
    """Add the serving subcommand to the `adaspec` parser."""
    add_serve_parser(sub)
