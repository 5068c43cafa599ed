"""The workload-drift benchmark: the same code-completion requests, phase after phase, for every strategy."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaspec.cli.main import CommandError
from adaspec.runtime.bench.commands import parse_strategies, resolve_target
from adaspec.runtime.bench.constants import FIXED_K, PRETRAINED_ALIAS, TRACES_FILE
from adaspec.runtime.bench.report import clear_outputs, table, write_all, write_partial
from adaspec.runtime.bench.summary import CONTROL, RequestRecord, goals, noise, summarize
from adaspec.runtime.strategies import BASELINE
from adaspec.runtime.train_draft import draft_report
from adaspec.runtime.workloads import (
    Corpus,
    CorpusSpec,
    Prompt,
    WorkloadError,
    cut_prompts,
    default_corpora,
    list_corpus,
)

# Strategies that run the static draft (or start from it)
NEEDS_DRAFT = ("static", "adaptive", "hybrid", "hybrid-feature")
# Strategies whose feature draft starts from train-draft's feature recipe
NEEDS_FEATURE = ("feature", "hybrid-feature")
# --quick is sized to finish in under 15 minutes on this 2-core machine (535 s measured idle); its
# windows are 4 requests so that each phase still shows a trend.
QUICK = {"requests_per_phase": 8, "max_new_tokens": 32, "window": 4}
FULL = {"requests_per_phase": 32, "max_new_tokens": 96, "window": 8}


@dataclass
class DriftConfig:
    """The benchmark's inputs, parsed and checked once at the edge."""

    phases: list[CorpusSpec]
    strategies: list[str]
    requests_per_phase: int
    max_new_tokens: int
    out: Path
    target: str = PRETRAINED_ALIAS
    static_draft: Path | None = None
    feature_draft: Path | None = None
    draft_budget_minutes: float = 60.0
    temperature: float = 0.0
    seed: int = 0
    quick: bool = False
    window: int = 8
    prompt_tokens: tuple[int, int] = (256, 384)
    command: str = ""
    notes: list[str] = field(default_factory=list)


def config_from_args(args: argparse.Namespace) -> DriftConfig:
    """Validate the command line (strategies, corpora, numbers) before anything heavy is loaded."""
    strategies = parse_strategies(args.strategies)
    try:
        phases = [CorpusSpec.parse(c) for c in args.corpus] if args.corpus else default_corpora()
    except WorkloadError as exc:
        raise CommandError(str(exc)) from exc
    langs = [p.lang for p in phases]
    if len(set(langs)) != len(langs):
        raise CommandError(f"each phase needs its own language, got {langs}")
    if not 0.0 <= args.temperature <= 100.0:
        raise CommandError(f"--temperature must be in [0, 100], got {args.temperature}")
    preset = QUICK if args.quick else FULL
    return DriftConfig(
        phases=phases,
        strategies=strategies,
        requests_per_phase=args.requests_per_phase or preset["requests_per_phase"],
        max_new_tokens=args.max_new_tokens or preset["max_new_tokens"],
        out=Path(args.out),
        target=args.target,
        static_draft=Path(args.static_draft).expanduser() if args.static_draft else None,
        feature_draft=Path(args.feature_draft).expanduser() if args.feature_draft else None,
        draft_budget_minutes=args.draft_budget_minutes,
        temperature=args.temperature,
        seed=args.seed,
        quick=args.quick,
        window=preset["window"],
        command="adaspec " + " ".join(sys.argv[1:]) if sys.argv[1:] else "adaspec bench drift",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """CLI entry: run, write the three files, print the table; on failure keep only a partial file."""
    config = config_from_args(args)
    corpora = [_list(spec) for spec in config.phases]  # fail on an empty corpus before loading models
    config.out.mkdir(parents=True, exist_ok=True)
    clear_outputs(config.out)
    partial: dict[str, Any] = {"setup": {"command": config.command}, "records": []}
    try:
        results = run(config, corpora, partial)
    except (WorkloadError, ValueError, ImportError, OSError, RuntimeError) as exc:
        path = write_partial(config.out, partial, f"{type(exc).__name__}: {exc}")
        raise CommandError(
            f"{exc} (run incomplete; what was measured is in {path}, marked complete=false)"
        ) from exc
    paths = write_all(config.out, results)
    print(table(results))
    print(f"wall time {results['setup']['wall_seconds']:.0f} s; wrote {', '.join(str(p) for p in paths)}")
    return 0


def _list(spec: CorpusSpec) -> Corpus:
    try:
        return list_corpus(spec)
    except WorkloadError as exc:
        raise CommandError(str(exc)) from exc


def static_draft_for(config: DriftConfig, target_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    """Return the static draft directory and its manifest (trained by train-draft's recipe when absent)."""
    from adaspec.runtime.train_draft import default_static_draft

    return _draft_for(config, target_dir, NEEDS_DRAFT, config.static_draft, default_static_draft, "static")


def feature_draft_for(config: DriftConfig, target_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    """Return the feature draft directory and its manifest (train-draft's feature recipe when absent)."""
    from adaspec.runtime.train_feature import default_feature_draft

    return _draft_for(
        config, target_dir, NEEDS_FEATURE, config.feature_draft, default_feature_draft, "feature"
    )


def _draft_for(
    config: DriftConfig,
    target_dir: Path,
    needs: tuple[str, ...],
    given: Path | None,
    default: Callable[[Path, CorpusSpec, float, int], tuple[Path, dict[str, Any], bool]],
    kind: str,
) -> tuple[Path | None, dict[str, Any]]:
    import json

    if not any(s in needs for s in config.strategies):
        return None, {}
    if given is not None:
        manifest_path = given / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        return given, manifest
    python = next((p for p in config.phases if p.lang == "python"), None)
    if python is None:
        raise WorkloadError(f"the default {kind} draft is trained on a python phase; give --{kind}-draft DIR")
    path, manifest, built = default(target_dir, python, config.draft_budget_minutes, config.seed)
    if built:
        config.notes.append(
            f"the {kind} draft was trained in this run ({draft_report(manifest)['seconds']:.0f} s)"
        )
    return path, manifest


def cut_all(
    config: DriftConfig, corpora: Sequence[Corpus], encode: Callable[[str], list[int]], exclude: set[str]
) -> tuple[list[list[Prompt]], list[dict[str, Any]]]:
    """Prompts for every phase from held-out files never used to train the draft, with corpus reports."""
    prompts, reports = [], []
    for corpus in corpora:
        got, report = cut_prompts(
            corpus,
            encode,
            config.requests_per_phase,
            prompt_tokens=config.prompt_tokens,
            seed=config.seed,
            exclude=exclude,
            heldout_only=True,
        )
        prompts.append(got)
        reports.append(vars(report))
    return prompts, reports


def run(config: DriftConfig, corpora: Sequence[Corpus], partial: dict[str, Any]) -> dict[str, Any]:
    """Serve every phase's requests with every strategy (interleaved per request); return the results.

    Interleaving puts all strategies under the same machine load at the same moment (the CPU is
    shared), while each strategy still sees the requests in serving order, so adaptive ones carry
    what they learned from request to request and phase to phase, as in a server. Each request's round
    starts one strategy later than the last (`round_order`), so no strategy always follows the same one.
    """
    from tqdm import tqdm

    from adaspec.runtime.bench.costs import measure_costs
    from adaspec.runtime.bench.replay import Trace, write_traces
    from adaspec.runtime.cpukernels import TuningReport
    from adaspec.runtime.engine import build_engine
    from adaspec.runtime.models import load_tokenizer
    from adaspec.runtime.sampling import SamplingParams

    started = time.perf_counter()
    load_before = _load()
    target_dir = resolve_target(config.target)
    draft_dir, manifest = static_draft_for(config, target_dir)
    feature_dir, feature_manifest = feature_draft_for(config, target_dir)
    tokenizer = load_tokenizer(target_dir)

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    exclude = set(draft_report(manifest).get("training_files", []))
    exclude |= set(draft_report(feature_manifest).get("training_files", []))
    prompts, corpus_reports = cut_all(config, corpora, encode, exclude)
    setup = _setup(config, target_dir, draft_dir, manifest, corpus_reports, load_before)
    setup["feature_draft"] = _feature_setup(feature_dir, feature_manifest)
    partial["setup"] = setup
    engines = {}
    kernels = TuningReport()  # tuned once, on the first engine's models; every engine runs the same
    for name in config.strategies:
        engines[name] = build_engine(
            target_dir,
            static_draft_dir=draft_dir if name in NEEDS_DRAFT else None,
            feature_draft_dir=feature_dir if name in NEEDS_FEATURE else None,
            strategy=name,
            device="cpu",
            fixed_k=FIXED_K.get(name),
            cpu_kernels=kernels,
        )
    if BASELINE in engines:  # a second copy of the baseline in every round: the run's noise (`noise`)
        engines[CONTROL] = build_engine(target_dir, strategy=BASELINE, device="cpu", cpu_kernels=kernels)
    setup["cpu_kernels"] = kernels.summary()
    records: list[RequestRecord] = []
    total = sum(len(p) for p in prompts) * len(engines)
    with tqdm(total=total, unit="req", desc="bench drift", file=sys.stderr) as bar:
        index = 0
        for spec, phase_prompts in zip(config.phases, prompts, strict=True):
            for prompt in phase_prompts:
                sampling = SamplingParams(temperature=config.temperature, seed=config.seed + index)
                for name in round_order(list(engines), index):
                    engine = engines[name]
                    res = engine.generate(
                        list(prompt.token_ids),
                        max_new_tokens=config.max_new_tokens,
                        sampling=sampling,
                        tag=spec.lang,
                    )
                    records.append(_record(name, spec.lang, index, res))
                    partial["records"].append(vars(records[-1]) | {"token_ids": len(res.token_ids)})
                    bar.set_postfix(phase=spec.lang, strategy=name, refresh=False)  # the one just done
                    bar.update(1)
                index += 1
    measured = proposer_costs(engines)
    del engines
    if config.temperature == 0 and config.strategies:
        # greedy: every strategy committed the target's tokens; any one's are the trace (the report
        # checks that they all match target-only's)
        first = config.strategies[0]
        flat = [p for phase_prompts in prompts for p in phase_prompts]
        mine = [r for r in records if r.strategy == first]
        write_traces(
            config.out / TRACES_FILE,
            (Trace(r.phase, tuple(p.token_ids), r.token_ids) for r, p in zip(mine, flat, strict=True)),
        )
        setup["traces"] = TRACES_FILE
    costs = measure_costs(target_dir, draft_dir, plan=kernels)
    costs["proposers"] = measured
    phases = [p.lang for p in config.phases]
    setup["wall_seconds"] = time.perf_counter() - started
    setup["machine"]["load_after"] = _load()
    results: dict[str, Any] = {
        "setup": setup,
        "strategies": summarize(records, phases, config.strategies, config.window),
        "goals": goals(records, phases, config.window),
        "noise": noise(records, phases),
        "costs": costs,
        "notes": config.notes,
    }
    if config.temperature > 0:
        for data in results["strategies"].values():
            for fig in data["phases"].values():
                fig["tokens_match_target_only"] = None  # sampled tokens differ run to run by design
    return results


def round_order(names: Sequence[str], index: int) -> list[str]:
    """The order the strategies serve request `index` in: the run's order, started `index` places later, so
    that across a phase each strategy serves from each place in the round (in a quick run served in one
    fixed order, target-only served again last ran at 0.95x the first copy's tokens/s on Python)."""
    if not names:
        return []
    start = index % len(names)
    return [*names[start:], *names[:start]]


def proposer_costs(engines: dict[str, Any]) -> dict[str, dict[str, float]]:
    """c for every proposer as each strategy's controller measured it while serving: seconds per drafted
    token over seconds of a one-token target pass (proposer -> strategy -> c)."""
    out: dict[str, dict[str, float]] = {}
    for strategy, engine in engines.items():
        ctl = engine.controller
        if ctl is None:
            continue
        step = ctl.costs.t_verify(1)
        for name in engine.proposers:
            seconds = ctl.costs.draft.get(name)
            if seconds is not None and step > 0:
                out.setdefault(name, {})[strategy] = round(seconds / step, 4)
    return out


def _record(name: str, lang: str, index: int, res: Any) -> RequestRecord:
    stats = res.stats
    per = stats.per_speculator.values()
    return RequestRecord(
        strategy=name,
        phase=lang,
        index=index,
        generated_tokens=int(stats.generated_tokens),
        target_forward_passes=int(stats.target_forward_passes),
        drafts=sum(int(p.drafts) for p in per),
        draft_tokens=sum(int(p.draft_tokens) for p in per),
        accepted_tokens=sum(int(p.accepted_tokens) for p in per),
        elapsed_s=_seconds(stats),
        failures=sum(int(getattr(p, "failures", 0)) for p in per),
        token_ids=tuple(int(t) for t in res.token_ids),
        propose_s=float(stats.propose_seconds),
        verify_s=float(stats.verify_seconds),
    )


def _seconds(stats: Any) -> float:
    """Decode time of one generation (the engine's tokens/s excludes the prefill, equal for all)."""
    for name in ("decode_seconds", "elapsed_s"):
        value = getattr(stats, name, None)
        if value is not None:
            return float(value)
    raise RuntimeError("the engine's generation stats carry neither decode_seconds nor elapsed_s")


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _draft_setup(
    path: Path | None, manifest: dict[str, Any], summary: Callable[[dict[str, Any]], str]
) -> dict[str, Any]:
    """A draft's report for results.json: its training files counted, not listed, and a one-line summary."""
    report = draft_report(manifest)
    out: dict[str, Any] = {"path": str(path) if path else None}
    if report:
        out.update({k: v for k, v in report.items() if k != "training_files"})
        out["training_files"] = len(report.get("training_files", []))
        out["summary"] = summary(report)
    return out


def _feature_setup(path: Path | None, manifest: dict[str, Any]) -> dict[str, Any]:
    return _draft_setup(
        path,
        manifest,
        lambda r: (
            f"{r['parameters'] / 1e6:.1f} M parameters, trained on Python for {r['seconds']:.0f} s; "
            f"held out: top-1 agreement {r['eval_top1_agreement_after']:.2f}, a 4-token chain "
            f"{r['eval_chain4_after']:.2f} tokens accepted"
        ),
    )


def _setup(
    config: DriftConfig,
    target_dir: Path,
    draft_dir: Path | None,
    manifest: dict[str, Any],
    corpus_reports: list[dict[str, Any]],
    load_before: str,
) -> dict[str, Any]:
    import json

    import torch
    import transformers

    marker = target_dir / "adaspec-conversion.json"
    conv = json.loads(marker.read_text()) if marker.is_file() else {}
    draft = _draft_setup(
        draft_dir,
        manifest,
        lambda r: (
            f"{r['parameters'] / 1e6:.1f} M parameters ({r['size_bytes'] / 1e6:.0f} MB), distilled on Python "
            f"for {r['seconds']:.0f} s, held-out top-1 agreement with the target "
            f"{r['eval_top1_agreement_after']:.2f}"
        ),
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        arctic: str | None = version("arctic-inference")
    except PackageNotFoundError:
        arctic = None
    return {
        "command": config.command,
        "quick": config.quick,
        "phases": [p.lang for p in config.phases],
        "corpora": corpus_reports,
        "strategies": config.strategies,
        "fixed_k": {s: FIXED_K.get(s) for s in config.strategies},
        "requests_per_phase": config.requests_per_phase,
        "max_new_tokens": config.max_new_tokens,
        "prompt_tokens": list(config.prompt_tokens),
        "window": config.window,
        "sampling": "greedy" if config.temperature == 0 else f"temperature {config.temperature}",
        "seed": config.seed,
        "target": {
            "name": conv.get("model_id", str(target_dir)),
            "path": str(target_dir),
            "source": conv.get("source_package"),
            "gguf": conv.get("gguf_file"),
            "dtype": conv.get("dtype"),
            "parameters": conv.get("parameters", 0),
        },
        "static_draft": draft,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(),
            "torch_threads": torch.get_num_threads(),
            "load_before": load_before,
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "arctic_inference": arctic,
        },
    }
