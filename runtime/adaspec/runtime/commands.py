"""Handlers of the runtime's subcommands (heavy imports live here, not in cli.py)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adaspec.cli.errors import CommandError
from adaspec.runtime.engine import build_engine
from adaspec.runtime.models import ModelLoadError, load_tokenizer
from adaspec.runtime.sampling import SamplingParams

MAX_PROMPT_BYTES = 1 << 20


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt_file is not None:
        path = Path(args.prompt_file)
        try:
            if path.stat().st_size > MAX_PROMPT_BYTES:
                raise CommandError(f"--prompt-file {str(path)!r} is larger than {MAX_PROMPT_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"cannot read --prompt-file {str(path)!r}: {exc.strerror}") from None
    else:
        text = args.prompt
    if not text:
        raise CommandError("the prompt is empty")
    return str(text)


def run_generate(args: argparse.Namespace) -> int:
    """`adaspec generate`: print the continuation (or one JSON object with --json)."""
    text = _read_prompt(args)
    try:
        sampling = SamplingParams(args.temperature, args.top_p, args.top_k, args.seed)
        draft = Path(args.static_draft) if args.static_draft else None
        revision = Path(args.adaptive_revision) if args.adaptive_revision else None
        engine = build_engine(
            Path(args.target), draft, args.strategy, device=args.device, adaptive_revision=revision
        )
        tok = load_tokenizer(Path(args.target))
        ids = tok.encode(text, add_special_tokens=False)
        result = engine.generate(ids, args.max_new_tokens, sampling, tag=args.tag)
    except (ModelLoadError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    out = str(tok.decode(result.token_ids))
    if args.json:
        payload = {
            "text": out,
            "token_ids": result.token_ids,
            "finish_reason": result.finish_reason,
            "strategy": args.strategy,
            "stats": result.stats.to_dict(),
        }
        print(json.dumps(payload))
    else:
        sys.stdout.write(out + "\n")
        s = result.stats
        print(
            f"[{args.strategy}] tokens={s.generated_tokens} target_passes={s.target_forward_passes} "
            f"mean_accepted_length={s.mean_accepted_length:.2f} acceptance={s.acceptance_rate:.2f} "
            f"tok/s={s.tokens_per_second:.1f}",
            file=sys.stderr,
        )
    return 0


def run_fixtures(args: argparse.Namespace) -> int:
    """`adaspec fixtures --out DIR`: train or reuse the fixture models and copy them to DIR."""
    from adaspec.runtime.fixtures import build_fixtures

    out = build_fixtures(Path(args.out))
    print(out)
    return 0
