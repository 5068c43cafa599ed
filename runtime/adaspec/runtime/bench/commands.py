"""Handler of `adaspec train-draft`, and the helpers `bench drift` shares with it (target, strategies)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adaspec.cli.main import CommandError
from adaspec.runtime.bench.constants import DRIFT_STRATEGIES, PRETRAINED_ALIAS


def resolve_target(text: str) -> Path:
    """Return the target directory: the converted SmolLM2 for the alias, else the given directory."""
    from adaspec.runtime.pretrained import PretrainedError, ensure_pretrained

    if text != PRETRAINED_ALIAS:
        path = Path(text).expanduser()
        if not (path / "config.json").is_file():
            raise CommandError(f"--target {text!r} is neither {PRETRAINED_ALIAS!r} nor a model directory")
        return path
    try:
        converted = ensure_pretrained()
    except PretrainedError as exc:
        raise CommandError(str(exc)) from exc
    if converted.converted_now:
        print(
            f"converted {converted.gguf_path.name} -> {converted.path} in {converted.seconds:.1f} s",
            file=sys.stderr,
        )
    return converted.path


def parse_strategies(text: str) -> list[str]:
    """Return the strategy names in order; CommandError names an unknown one and lists the valid ones."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in DRIFT_STRATEGIES]
    if unknown or not names:
        raise CommandError(f"unknown strategy {unknown or text!r}; valid: {', '.join(DRIFT_STRATEGIES)}")
    return list(dict.fromkeys(names))


def run_train_draft(args: argparse.Namespace) -> int:
    """Train (or reuse) a static or feature draft and print its size, time and loss."""
    from adaspec.runtime.train_draft import DraftRecipe, draft_report, ensure_draft
    from adaspec.runtime.train_feature import FeatureRecipe, ensure_feature_draft
    from adaspec.runtime.workloads import CorpusSpec, WorkloadError

    try:
        spec = CorpusSpec.parse(args.corpus)
        target = resolve_target(args.target)
        given = {"steps": args.steps, "budget_minutes": args.budget_minutes}  # None: the recipe's default
        overrides = {k: v for k, v in given.items() if v is not None}
        out_dir = Path(args.out).expanduser()
        if args.arch == "feature":
            feature = FeatureRecipe(lang=spec.lang, seed=args.seed, **overrides)
            out, manifest, built = ensure_feature_draft(target, spec, out_dir, feature)
        else:
            recipe = DraftRecipe(lang=spec.lang, layers=args.layers, seed=args.seed, **overrides)
            out, manifest, built = ensure_draft(target, spec, out_dir, recipe)
    except (WorkloadError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    report = dict(draft_report(manifest))
    files = report.pop("training_files")
    if args.json:
        print(json.dumps({"out": str(out), "built_now": built, **report, "training_files": len(files)}))
        return 0
    how = "trained now" if built else "reused: same recipe hash"
    print(f"draft: {out} ({how} {report['recipe_hash'][:12]})")
    trained = report.get("trainable_parameters", report["parameters"])
    print(
        f"size: {report['size_bytes'] / 1e6:.1f} MB, {report['parameters'] / 1e6:.1f} M parameters "
        f"({trained / 1e6:.1f} M trained)"
    )
    print(
        f"training: {report['seconds']:.0f} s, {report['steps']} of {report['planned_steps']} steps "
        f"(stopped by {report['stopped_by']}), {report['tokens']} tokens, {len(files)} {spec.lang} files"
    )
    if report["stopped_by"] == "time_cap":
        print(
            f"warning: the time cap stopped training after {report['steps']} of the recipe's "
            f"{report['planned_steps']} steps: the recipe was not completed (raise --budget-minutes)",
            file=sys.stderr,
        )
    if args.arch == "feature":
        print(
            f"held-out: top-1 agreement {report['eval_top1_agreement_before']:.3f} -> "
            f"{report['eval_top1_agreement_after']:.3f}; tokens a 4-token chain would have had accepted "
            f"{report['eval_chain4_before']:.3f} -> {report['eval_chain4_after']:.3f}; the reduced "
            f"vocabulary covers {report['vocab_coverage']:.1%} of the training tokens"
        )
        return 0
    print(
        f"loss (forward KL to the target): train {report['final_train_kl']:.3f}; held-out "
        f"{report['eval_kl_before']:.3f} -> {report['eval_kl_after']:.3f}; top-1 agreement "
        f"{report['eval_top1_agreement_before']:.3f} -> {report['eval_top1_agreement_after']:.3f}"
    )
    if report.get("vocab_coverage") is not None:  # drafts from before recipe v3 carry no counts
        print(
            f"reduced vocabulary: the {report['vocab_size']} most frequent ids cover "
            f"{report['vocab_coverage']:.1%} of the training tokens (vocab.safetensors)"
        )
    return 0
