"""`adaspec bench micro`: every strategy side by side on the fixture models, in one run.

Prompts are cut from held-out Python files (the draft's language) and then Go files (a language
the static draft never saw), served in that order so adaptive strategies carry what they learn.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adaspec.cli.errors import CommandError
from adaspec.runtime.corpus import collect, default_roots
from adaspec.runtime.cpukernels import TuningReport
from adaspec.runtime.engine import autoregressive_generate, build_engine
from adaspec.runtime.fixtures import build_fixtures
from adaspec.runtime.models import load_tokenizer
from adaspec.runtime.stats import GenerationStats
from adaspec.runtime.strategies import BASELINE, STRATEGIES
from adaspec.runtime.workloads import Prompt


def cut_prompts(tok: object, lang: str, count: int, length: int = 96, seed: int = 0) -> list[Prompt]:
    """Return `count` prompts of `length` tokens ending mid-file, from held-out files of `lang` (a source
    tree found on this machine, see `default_roots`); ValueError naming the trees found otherwise."""
    roots = default_roots()
    if lang not in roots:
        raise ValueError(f"no {lang} source tree on this machine (found: {', '.join(sorted(roots))})")
    root = roots[lang]
    files = collect(lang, root, heldout=True, max_bytes=4_000_000)
    out: list[Prompt] = []
    for i, f in enumerate(files):
        enc = tok(f.read(), add_special_tokens=False, return_offsets_mapping=True)  # type: ignore[operator]
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        if len(ids) < length + 64:
            continue
        start = (seed * 7919 + i * 104729) % (len(ids) - length - 32)
        end = start + length
        out.append(Prompt(lang, f.file_id, int(offsets[end - 1][1]), tuple(ids[start:end])))
        if len(out) == count:
            break
    return out


def run_micro(args: argparse.Namespace) -> int:
    """Print mean accepted length, acceptance and tokens/s per strategy and language."""
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise CommandError(f"unknown strategies {unknown}; valid: {', '.join(STRATEGIES)}")
    if BASELINE not in strategies:
        strategies.insert(0, BASELINE)
    home = build_fixtures()
    target, draft = home / "target", home / "draft"
    tok = load_tokenizer(target)
    prompts = [p for lang in ("python", "go") for p in cut_prompts(tok, lang, args.prompts)]
    reference: list[list[int]] = []
    rows: dict[str, dict[str, GenerationStats]] = {}
    matches: dict[str, bool] = {}
    kernels = TuningReport()  # one kernel choice for every strategy, so that they compare like for like
    for strategy in strategies:
        engine = build_engine(target, draft, strategy, cpu_kernels=kernels)
        per_lang: dict[str, GenerationStats] = {}
        outputs = []
        for p in prompts:
            res = engine.generate(p.token_ids, args.max_new_tokens, tag=p.lang)
            per_lang.setdefault(p.lang, GenerationStats()).merge(res.stats)
            outputs.append(res.token_ids)
        if strategy == BASELINE:
            reference = outputs
            base = [autoregressive_generate(engine.target, p.token_ids, args.max_new_tokens) for p in prompts]
            matches["autoregressive-baseline"] = base == reference
        matches[strategy] = outputs == reference
        rows[strategy] = per_lang
    _print(rows, matches, Path(home), args.json)
    return 0 if all(matches.values()) else 1


def _print(
    rows: dict[str, dict[str, GenerationStats]], matches: dict[str, bool], home: Path, as_json: bool
) -> None:
    base = rows[BASELINE]
    table = []
    for strategy, per_lang in rows.items():
        for lang, s in per_lang.items():
            b = base[lang].tokens_per_second
            table.append(
                {
                    "strategy": strategy,
                    "lang": lang,
                    "mean_accepted_length": round(s.mean_accepted_length, 3),
                    "acceptance_rate": round(s.acceptance_rate, 3),
                    "tokens_per_second": round(s.tokens_per_second, 1),
                    "speedup_vs_target_only": round(s.tokens_per_second / b, 3) if b else None,
                    "tokens_match_target_only": matches[strategy],
                    "per_speculator": {k: v.to_dict() for k, v in s.per_speculator.items() if v.drafts},
                }
            )
    if as_json:
        print(json.dumps({"fixtures": str(home), "rows": table, "matches": matches}, indent=1))
        return
    print(f"fixtures: {home}")
    print(
        f"{'strategy':<12} {'lang':<7} {'acc.len':>7} {'accept':>7} {'tok/s':>8} {'speedup':>8}  same-output"
    )
    for r in table:
        print(
            f"{r['strategy']:<12} {r['lang']:<7} {r['mean_accepted_length']:>7.2f} "
            f"{r['acceptance_rate']:>7.2f} {r['tokens_per_second']:>8.1f} "
            f"{r['speedup_vs_target_only']:>7.2f}x  {r['tokens_match_target_only']}"
        )
    print(f"plain autoregressive baseline equals target-only: {matches['autoregressive-baseline']}")
