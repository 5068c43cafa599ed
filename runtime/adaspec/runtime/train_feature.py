"""`adaspec train-draft --arch feature`: the feature-level (EAGLE) draft trained offline on one language.

The online `feature` strategy starts from this draft and keeps learning from served traffic, as the adaptive
draft starts from the static one: the issue's "same architecture trained offline", so the race between a
frozen draft and a learning one is fair. Data, step budget, time cap, cache and revision layout are
train-draft's (train_draft.py); what differs is the student (`FeatureDraftNet` over the target's final
features) and its loss (`FeatureLearner.loss`: EAGLE's feature regression plus distillation to the target's
distribution over the reduced vocabulary, on an unrolled training-time test, arXiv 2503.01840).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from adaspec.runtime.artifacts import ArtifactError, Manifest, read_manifest
from adaspec.runtime.proposers.feature import FeatureConfig, FeatureExample, FeatureProposer, feature_example
from adaspec.runtime.train_draft import (
    Prepared,
    Progress,
    StopReason,
    check_recipe,
    ensure_draft,
    prepare,
    run_steps,
    write_draft_dir,
)
from adaspec.runtime.workloads import CorpusSpec

FEATURE_RECIPE_VERSION = 1
FEATURE_WEIGHTS = "feature.safetensors"  # the one weights file of a feature-draft revision
FEATURE_KIND = "feature-draft"  # manifest training_window.kind

__all__ = ["FeatureRecipe", "ensure_feature_draft", "load_feature_draft", "train_feature"]


@dataclass(frozen=True)
class FeatureRecipe:
    """Everything that determines the feature draft (hashed with its inputs, less `budget_minutes`).

    One decoder layer over (embedding of x_t, target feature f_{t-1}), the target's own head over the
    `vocab_size` most frequent ids of the training windows (FR-Spec, arXiv 2502.14856), trained for `steps`
    steps of `batch_size` windows of `seq_len` tokens; each window's features come from one target pass.
    """

    lang: str = "python"
    seq_len: int = 128  # the static draft's: the same 230,400 tokens in 450 steps (one target pass each)
    batch_size: int = 4
    lr: float = 2e-3
    warmup_steps: int = 10
    steps: int = 450
    vocab_size: int = 8192
    train_depth: int = 3
    budget_minutes: float = 60.0
    seed: int = 0
    eval_sequences: int = 8
    arch: str = "feature"
    version: int = FEATURE_RECIPE_VERSION

    def __post_init__(self) -> None:
        check_recipe(self, ("seq_len", "batch_size", "steps", "vocab_size", "train_depth", "eval_sequences"))

    def config(self) -> FeatureConfig:
        """The draft's shape and loss settings (the online learner's other settings at their defaults)."""
        return FeatureConfig(
            vocab_size=self.vocab_size,
            lr=self.lr,
            batch_size=self.batch_size,
            max_positions=self.seq_len,
            train_depth=self.train_depth,
            seed=self.seed,
        )


@dataclass
class FeatureReport:
    """What training did; saved in the revision's manifest.json."""

    recipe_hash: str
    parameters: int
    size_bytes: int
    steps: int
    planned_steps: int
    tokens: int
    seconds: float
    stopped_by: StopReason
    final_train_loss: float
    eval_top1_agreement_before: float  # teacher-forced, held out: draft argmax == target argmax
    eval_top1_agreement_after: float
    eval_chain4_before: float  # held out: mean tokens a 4-token drafted chain would have had accepted
    eval_chain4_after: float
    vocab_coverage: float  # share of the training tokens inside the reduced vocabulary
    training_files: list[str] = field(default_factory=list)


def _examples(prep: Prepared, ids: torch.Tensor, device: torch.device) -> list[FeatureExample]:
    """One example per row of ids [batch, seq], with the target's features from one pass."""
    with torch.inference_mode():
        feats = prep.target.model(input_ids=ids).last_hidden_state  # [batch, seq, H]
    out = [
        feature_example(row.tolist(), f, 1, ids.shape[1], device) for row, f in zip(ids, feats, strict=True)
    ]
    return [ex for ex in out if ex is not None]


def _evaluate(prop: FeatureProposer, held_out: Sequence[FeatureExample]) -> tuple[float, float]:
    """(top-1 agreement, mean 4-token chain) of the serving draft on held-out examples."""
    learner = prop.learner
    agree = [learner.agreement(prop.net, ex, prop.vocab) for ex in held_out]
    chain = [learner.chains(prop.net, ex, prop.vocab) for ex in held_out]
    return sum(agree) / len(agree), sum(chain) / len(chain)


def train_feature(
    target_dir: Path,
    corpus_spec: CorpusSpec,
    recipe: FeatureRecipe,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[FeatureProposer, FeatureReport]:
    """Train the feature draft for `recipe.steps` steps (fewer when the time cap is hit first, as in
    train-draft); return the proposer serving the result and the report."""
    prep = prepare(target_dir, corpus_spec, recipe)
    prop = FeatureProposer(prep.target, recipe.config())
    device = prop.device
    used: list[str] = []
    # The reduced vocabulary is ranked on the windows the recipe trains on, drawn before training.
    windows = list(itertools.islice(prep.batches(recipe, used), recipe.steps))  # [batch, seq] each
    prop.count([row.tolist() for ids in windows for row in ids])
    counts = prop.counts.counts
    coverage = float(counts[prop.vocab.ids].sum() / counts.sum().clamp_min(1.0))
    held_out = [ex for ids in prep.eval_data for ex in _examples(prep, ids, device)]
    agree_before, chain_before = _evaluate(prop, held_out)
    learner = prop.learner

    def step(ids: torch.Tensor, lr: float) -> float:
        for group in learner.opt.param_groups:
            group["lr"] = lr
        return learner.train_on(_examples(prep, ids, device))

    loop = run_steps(recipe, iter(windows), step, prep.corpus, progress, clock)
    learner.publish()
    prop.serve_published()
    agree_after, chain_after = _evaluate(prop, held_out)
    report = FeatureReport(
        recipe_hash=prep.digest,
        parameters=sum(p.numel() for p in prop.net.parameters()),
        size_bytes=0,
        **loop.report(recipe),
        final_train_loss=round(loop.final_loss, 4),
        eval_top1_agreement_before=round(agree_before, 4),
        eval_top1_agreement_after=round(agree_after, 4),
        eval_chain4_before=round(chain_before, 4),
        eval_chain4_after=round(chain_after, 4),
        vocab_coverage=round(coverage, 4),
        training_files=sorted(set(used)),
    )
    return prop, report


def save_feature_draft(
    prop: FeatureProposer, target_dir: Path, out: Path, recipe: FeatureRecipe, report: FeatureReport
) -> Path:
    """Write the draft as a revision: feature.safetensors (weights, vocabulary map, counts) and manifest."""
    from safetensors.torch import save_file

    def fill(staging: Path) -> None:
        save_file(prop.state_dict_for_save(), str(staging / FEATURE_WEIGHTS), metadata={"format": "pt"})
        report.size_bytes = (staging / FEATURE_WEIGHTS).stat().st_size

    metrics = {
        "heldout_top1_agreement": report.eval_top1_agreement_after,
        "heldout_chain4": report.eval_chain4_after,
    }
    return write_draft_dir(out, target_dir, fill, FEATURE_KIND, recipe, report, metrics)


def train_and_save(
    target_dir: Path, corpus_spec: CorpusSpec, recipe: Any, out: Path, progress: Progress
) -> None:
    """Train a feature draft by `recipe` (a FeatureRecipe) and write it to `out`."""
    prop, report = train_feature(target_dir, corpus_spec, recipe, progress)
    save_feature_draft(prop, target_dir, out, recipe, report)


def ensure_feature_draft(
    target_dir: Path,
    corpus_spec: CorpusSpec,
    out: Path | None,
    recipe: FeatureRecipe,
    show_progress: bool = True,
) -> tuple[Path, dict[str, Any], bool]:
    """Return (dir, manifest, built_now): the feature draft in `out` (default: the cache) or trained now."""
    return ensure_draft(target_dir, corpus_spec, out, recipe, show_progress, build=train_and_save)


def default_feature_draft(
    target_dir: Path, python: CorpusSpec, budget_minutes: float = FeatureRecipe.budget_minutes, seed: int = 0
) -> tuple[Path, dict[str, Any], bool]:
    """The feature draft `bench drift` starts its feature strategies from: the recipe on `python`, cached
    under `<cache>/drafts/feature-python`."""
    from adaspec.runtime.pretrained import cache_root

    recipe = FeatureRecipe(lang="python", budget_minutes=budget_minutes, seed=seed)
    return ensure_feature_draft(target_dir, python, cache_root() / "drafts" / "feature-python", recipe)


def load_feature_draft(rev_dir: Path, tokenizer_sha256: str) -> tuple[dict[str, torch.Tensor], Manifest]:
    """The tensors of a feature-draft revision after read_manifest's checks (every sha256, no pickles, the
    tokenizer); ArtifactError when the revision is not a feature draft."""
    from safetensors.torch import load_file

    manifest = read_manifest(rev_dir, tokenizer_sha256)
    if FEATURE_WEIGHTS not in manifest.files:
        kind = manifest.training_window.get("kind", "unknown")
        raise ArtifactError(
            f"revision {str(rev_dir)!r} is not a feature draft (kind {kind!r}, no {FEATURE_WEIGHTS}); "
            "train one with `adaspec train-draft --arch feature`"
        )
    return load_file(str(rev_dir / FEATURE_WEIGHTS)), manifest


def feature_config_for(tensors: dict[str, torch.Tensor], background: bool) -> FeatureConfig:
    """The online config a saved feature draft fits: its vocabulary size and MLP width."""
    ids, dims = tensors.get("vocab.ids"), tensors.get("meta.dims")
    if ids is None or dims is None or dims.numel() != 5:
        raise ArtifactError("a feature draft's tensors need vocab.ids and meta.dims (5 values)")
    return FeatureConfig(vocab_size=int(ids.numel()), intermediate=int(dims[4]), background=background)
