"""Start-up measurements for the controller's cost model: target pass time by size, draft step time."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable

from adaspec.runtime.models import CachedLM


def _time_feed(lm: CachedLM, prefix: list[int], q: int, reps: int) -> float:
    times = []
    for _ in range(reps):
        lm.truncate(len(prefix))
        t0 = time.perf_counter()
        lm.feed([1] * q)
        times.append(time.perf_counter() - t0)
    lm.truncate(len(prefix))
    return statistics.median(times)


def measure_verify_seconds(
    target: CachedLM, sizes: Iterable[int], context: int = 64, reps: int = 3
) -> dict[int, float]:
    """Median seconds of one target pass over q tokens after a `context`-token prefix, per q."""
    target.reset()
    prefix = [1] * context
    target.feed(prefix)
    _time_feed(target, prefix, 1, 2)  # warm-up
    out = {q: _time_feed(target, prefix, q, reps) for q in sorted(set(sizes))}
    target.reset()
    return out


def measure_step_seconds(draft: CachedLM, context: int = 64, reps: int = 5) -> float:
    """Median seconds of one single-token draft step."""
    draft.reset()
    prefix = [1] * context
    draft.feed(prefix)
    _time_feed(draft, prefix, 1, 2)
    s = _time_feed(draft, prefix, 1, reps)
    draft.reset()
    return s
