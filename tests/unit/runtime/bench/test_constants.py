"""`bench drift` offers every strategy of `adaspec.runtime.strategies`, in the report's order."""

from __future__ import annotations

from adaspec.runtime.bench.constants import DRIFT_STRATEGIES
from adaspec.runtime.strategies import STRATEGIES


def test_drift_strategies_are_the_one_list_reordered() -> None:
    assert sorted(DRIFT_STRATEGIES) == sorted(STRATEGIES)
    assert DRIFT_STRATEGIES == (
        "target-only",
        "static",
        "ngram",
        "arctic-suffix",
        "suffix",
        "adaptive",
        "hybrid",
        "feature",
        "hybrid-feature",
    )
