"""What `bench serve` runs on (models, prompts, serve's flags) and how its report reads."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaspec.cli.errors import CommandError
from adaspec.runtime.train_draft import draft_report

FIXTURE_PROMPT_TOKENS = 96  # microbench's prompt length on the fixtures (1024 positions)
NOTES = (
    "both paths see the prompts in the same order (warm-up, then the rows in the table's order); the "
    "proposers learn across requests (suffix index, adaptive draft), so later rows draft from what earlier "
    "rows generated, on both paths alike",
    "rows run one at a time and each starts once both processes are idle (the adaptive draft trains in "
    "the background after requests), so engine and HTTP never share the CPU",
    "each process tunes its CPU kernels and calibrates its controller at load, as serve does; the two "
    "may choose slightly differently",
    "the FIFO scheduler decodes one request at a time: at concurrency > 1 clients queue, so TTFT grows "
    "with concurrency; every row repeats the same prompts, whose greedy continuations the suffix index "
    "has seen from the second row on: compare paths within a concurrency, not rows across",
    "the HTTP clients (openai, one thread each) run in the bench's process on the same CPUs as serve: "
    "their SSE parsing is part of the HTTP path's cost, as it is for any client on the same machine",
)


@dataclass
class ServeBenchConfig:
    """The benchmark's inputs, checked once at the edge."""

    strategy: str
    prompts: int
    max_tokens: int
    concurrency: tuple[int, ...]
    out: Path | None = None
    as_json: bool = False
    pretrained: str | None = None
    seed: int = 0
    warmup: int = 2  # requests per path before the first row, on prompts of their own; not counted
    command: str = "adaspec bench serve"
    notes: list[str] = field(default_factory=list)


@dataclass
class Prepared:
    """Models, prompts and serve's flags of one run."""

    target_dir: Path
    draft_dir: Path | None
    prompts: list[tuple[int, ...]]  # [count][prompt_len] token ids
    serve_argv: list[str]
    source: dict[str, Any] = field(default_factory=dict)


def prepare(config: ServeBenchConfig, count: int) -> Prepared:
    """Resolve the models (fixtures, or bench drift's SmolLM2 and static draft) and cut `count` prompts."""
    from adaspec.runtime.bench.drift import NEEDS_DRAFT
    from adaspec.runtime.workloads import WorkloadError

    try:
        if config.pretrained is None:
            target, draft, prompts, source = _fixtures(config, count)
        else:
            target, draft, prompts, source = _pretrained(config, count)
    except (WorkloadError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    argv = [f"--target-model={target}", f"--strategy={config.strategy}", "--max-queue=256"]
    uses_draft = draft is not None and config.strategy in NEEDS_DRAFT
    if uses_draft:
        argv.append(f"--static-draft={draft}")
    argv.append("--log-level=warning")
    return Prepared(target, draft if uses_draft else None, prompts, argv, source)


Models = tuple[Path, Path | None, list[tuple[int, ...]], dict[str, Any]]  # target, draft, prompts, source


def _fixtures(config: ServeBenchConfig, count: int) -> Models:
    from adaspec.runtime.fixtures import build_fixtures
    from adaspec.runtime.microbench import cut_prompts
    from adaspec.runtime.models import load_tokenizer

    home = build_fixtures(quiet=True)
    target = home / "target"
    got = cut_prompts(load_tokenizer(target), "python", count, length=FIXTURE_PROMPT_TOKENS, seed=config.seed)
    if len(got) < count:
        raise CommandError(f"the held-out python files yield {len(got)} fixture prompts; {count} needed")
    source = {"models": "fixtures", "lang": "python", "prompt_tokens": FIXTURE_PROMPT_TOKENS}
    return target, home / "draft", [p.token_ids for p in got], source


def _pretrained(config: ServeBenchConfig, count: int) -> Models:
    from adaspec.runtime.bench.commands import resolve_target
    from adaspec.runtime.bench.drift import DriftConfig, cut_all, static_draft_for
    from adaspec.runtime.models import load_tokenizer
    from adaspec.runtime.workloads import default_corpora, list_corpus

    python = next(s for s in default_corpora() if s.lang == "python")
    drift = DriftConfig(
        phases=[python],
        strategies=[config.strategy],
        requests_per_phase=count,
        max_new_tokens=config.max_tokens,
        out=Path("."),
        target=str(config.pretrained),
        seed=config.seed,
    )
    target = resolve_target(drift.target)
    draft, manifest = static_draft_for(drift, target)
    tok = load_tokenizer(target)

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False).input_ids)

    exclude = set(draft_report(manifest).get("training_files", []))
    prompts, reports = cut_all(drift, [list_corpus(python)], encode, exclude)
    config.notes.extend(drift.notes)
    source = {"models": config.pretrained, "lang": "python", "prompt_tokens": list(drift.prompt_tokens)}
    return target, draft, [p.token_ids for p in prompts[0]], source | {"corpus": reports[0]}


def setup_info(config: ServeBenchConfig, prepared: Prepared, wall_s: float) -> dict[str, Any]:
    """Return results.json's setup: the command, inputs, models and machine."""
    import torch

    return {
        "command": config.command,
        "strategy": config.strategy,
        "prompts": config.prompts,
        "warmup_requests_per_path": config.warmup,
        "max_tokens": config.max_tokens,
        "concurrency": list(config.concurrency),
        "sampling": "greedy (temperature 0)",
        "target": str(prepared.target_dir),
        "static_draft": str(prepared.draft_dir) if prepared.draft_dir else None,
        "prompt_source": prepared.source,
        "serve_argv": prepared.serve_argv,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        },
        "wall_seconds": round(wall_s, 1),
    }


def report_md(results: dict[str, Any]) -> str:
    """Return report.md: the command, the table, the goal, the output check and the notes."""
    setup, outputs = results["setup"], results["outputs"]
    lines = [
        "# adaspec bench serve",
        "",
        f"`{setup['command']}`: strategy {setup['strategy']}, {setup['prompts']} prompts, max_tokens "
        f"{setup['max_tokens']}, concurrency {', '.join(str(c) for c in setup['concurrency'])}; "
        f"target {setup['target']}; {setup['wall_seconds']} s.",
        "",
        "```",
        results["table"],
        "```",
        "",
        results["goal_line"],
        "",
        f"Outputs: {outputs['same']}/{outputs['compared']} HTTP requests equal the engine's token ids.",
        "",
        "## Notes",
        "",
        *(f"- {n}" for n in results["notes"]),
        "",
    ]
    return "\n".join(lines)
