"""The decoding strategies by name and the proposers each runs (a leaf module: no torch)."""

from __future__ import annotations

# Strategy name -> proposers it runs (under the controller). "target-only" runs none.
STRATEGIES: dict[str, tuple[str, ...]] = {
    "target-only": (),
    "static": ("static",),
    "suffix": ("suffix",),
    "adaptive": ("adaptive",),
    "hybrid": ("static", "adaptive", "suffix"),
    "feature": ("feature",),  # the feature-level learned draft alone (EAGLE-style, learns online)
    "hybrid-feature": ("static", "feature", "suffix"),
    "ngram": ("ngram",),
    "arctic-suffix": ("arctic-suffix",),
}
# The target alone: every speed-up divides by it, every lossless check compares tokens with it.
BASELINE = "target-only"
# The strategies made of adaspec's own proposers (the others are peers measured beside them).
STRATEGY_NAMES: tuple[str, ...] = (
    "target-only",
    "static",
    "suffix",
    "adaptive",
    "hybrid",
    "feature",
    "hybrid-feature",
)
PEER_STRATEGIES: tuple[str, ...] = ("ngram", "arctic-suffix")


def proposers_for(strategy: str) -> tuple[str, ...]:
    """Proposer names a strategy runs; ValueError listing the valid strategies otherwise."""
    try:
        return STRATEGIES[strategy]
    except KeyError:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}") from None
