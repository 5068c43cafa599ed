"""Start-up measurements for the controller's cost model: target pass time by size, draft step time."""

from __future__ import annotations

import time
from collections.abc import Iterable

from adaspec.runtime.models import CachedLM


def _time_feed(lm: CachedLM, prefix_len: int, q: int, reps: int) -> float:
    """Fastest of `reps` passes over q tokens (the minimum is the estimate least disturbed by noise)."""
    best = float("inf")
    for _ in range(reps):
        lm.truncate(prefix_len)
        t0 = time.perf_counter()
        lm.feed([1] * q)
        best = min(best, time.perf_counter() - t0)
    lm.truncate(prefix_len)
    return best


def measure_verify_seconds(
    target: CachedLM, sizes: Iterable[int], context: int = 64, reps: int = 5
) -> dict[int, float]:
    """Seconds of one target pass over q tokens after a `context`-token prefix, per q.

    Made consistent: never decreasing in q, and never above q single-token passes.
    """
    target.reset()
    target.feed([1] * context)
    out: dict[int, float] = {}
    for q in sorted(set(sizes)):
        _time_feed(target, context, q, 1)  # warm-up for this shape
        out[q] = _time_feed(target, context, q, reps)
    target.reset()
    t1 = out.get(1, min(out.values()))
    prev = 0.0
    for q in sorted(out):
        out[q] = min(max(out[q], prev), q * t1)
        prev = out[q]
    return out


def measure_step_seconds(draft: CachedLM, context: int = 64, reps: int = 5) -> float:
    """Seconds of one single-token draft step (fastest of `reps`)."""
    draft.reset()
    draft.feed([1] * context)
    _time_feed(draft, context, 1, 2)
    s = _time_feed(draft, context, 1, reps)
    draft.reset()
    return s
