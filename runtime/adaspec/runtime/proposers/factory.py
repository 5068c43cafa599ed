"""The one place proposers are built by name, and strategies are turned into proposer lists."""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaspec.runtime.models import CachedLM, small_llama
from adaspec.runtime.proposers.adaptive import AdaptiveConfig, AdaptiveProposer
from adaspec.runtime.proposers.base import Proposer
from adaspec.runtime.proposers.static import DraftModelProposer
from adaspec.runtime.proposers.suffix import SuffixProposer
from adaspec.runtime.strategies import STRATEGIES, proposers_for

__all__ = ["STRATEGIES", "BuildContext", "build_proposer", "proposers_for", "scratch_draft"]

# Peers implemented in their own modules, each exposing build(vocab_size, max_tokens) -> Proposer.
PEER_MODULES = {
    "ngram": "adaspec.runtime.proposers.ngram",
    "arctic-suffix": "adaspec.runtime.proposers.arctic",
}
PROPOSERS = ("static", "suffix", "adaptive", "feature", *PEER_MODULES)


@dataclass
class BuildContext:
    """What proposers may be built from."""

    vocab_size: int
    k_max: int
    static_draft: Any | None = None  # a loaded draft model (frozen)
    adaptive_init: Any | None = None  # a loaded revision to start the adaptive draft from
    # token counts [vocab] (torch) ranking a reduced draft vocabulary: the static draft's, the revision's
    static_counts: Any | None = None
    adaptive_counts: Any | None = None
    static_draft_dir: Path | None = None
    adaptive: AdaptiveConfig | None = None
    device: str = "cpu"
    max_positions: int = 2048
    on_estimate: Callable[[str, float], None] | None = None
    target: Any | None = None  # the loaded target model (feature-level drafts read its head and features)
    feature_init: dict[str, Any] | None = None  # a saved feature draft's tensors to start `feature` from


def scratch_draft(ctx: BuildContext) -> Any:
    """A freshly initialised one-layer Llama draft for the target's vocabulary (adaptive from scratch)."""
    model = small_llama(
        ctx.vocab_size, hidden=128, heads=4, kv_heads=2, intermediate=384, max_positions=ctx.max_positions
    )
    return model.to(ctx.device)


def build_proposer(name: str, ctx: BuildContext) -> Proposer:
    """Build one proposer by name; ValueError listing the valid names otherwise."""
    if name == "static":
        if ctx.static_draft is None:
            raise ValueError("proposer 'static' needs a static draft model (--static-draft DIR)")
        lm = CachedLM(ctx.static_draft, ctx.device)
        return DraftModelProposer(lm, name="static", counts=ctx.static_counts)
    if name == "adaptive":
        revision = ctx.adaptive_init is not None
        start = ctx.adaptive_init if revision else ctx.static_draft
        counts = ctx.adaptive_counts if revision else ctx.static_counts
        model = copy.deepcopy(start) if start is not None else scratch_draft(ctx)
        lm = CachedLM(model, ctx.device)
        return AdaptiveProposer(lm, ctx.adaptive, on_estimate=ctx.on_estimate, counts=counts)
    if name == "suffix":
        return SuffixProposer()
    if name == "feature":
        if ctx.target is None:
            raise ValueError("proposer 'feature' needs the target model")
        from adaspec.runtime.proposers.feature import FeatureConfig, FeatureProposer
        from adaspec.runtime.train_feature import feature_config_for

        # it trains where the adaptive draft would: in a worker thread when serving, inline in tests
        background = ctx.adaptive.background if ctx.adaptive is not None else False
        if ctx.feature_init is None:  # from scratch
            return FeatureProposer(
                ctx.target, FeatureConfig(background=background), on_estimate=ctx.on_estimate
            )
        cfg = feature_config_for(ctx.feature_init, background)
        feature = FeatureProposer(ctx.target, cfg, on_estimate=ctx.on_estimate)
        feature.load_saved(ctx.feature_init)  # the offline-trained draft (train-draft --arch feature)
        return feature
    if name in PEER_MODULES:
        module = importlib.import_module(PEER_MODULES[name])
        peer: Proposer = module.build(ctx.vocab_size, ctx.k_max)
        return peer
    raise ValueError(f"unknown proposer {name!r}; valid: {', '.join(PROPOSERS)}")
