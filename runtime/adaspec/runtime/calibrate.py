"""Start-up measurements for the controller's cost model: target pass time by size, draft step time."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch

from adaspec.runtime.models import CachedLM


def _time_feed(lm: CachedLM, prefix_len: int, q: int, reps: int, head: torch.Tensor | None = None) -> float:
    """Fastest of `reps` passes over q tokens (the minimum is the estimate least disturbed by noise); with
    `head` [Vd, hidden], the layers and those output rows (a reduced draft vocabulary) instead of the
    model's own head."""
    best = float("inf")
    for _ in range(reps):
        lm.truncate(prefix_len)
        t0 = time.perf_counter()
        if head is None:
            lm.feed([1] * q)
        else:
            lm.feed_hidden([1] * q) @ head.T
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


def measure_step_seconds(
    draft: CachedLM, head: torch.Tensor | None = None, context: int = 64, reps: int = 5
) -> float:
    """Seconds of one single-token draft step (fastest of `reps`); `head` as in `_time_feed`."""
    draft.reset()
    draft.feed([1] * context)
    _time_feed(draft, context, 1, 2, head)
    s = _time_feed(draft, context, 1, reps, head)
    draft.reset()
    return s


def proposer_step_seconds(proposer: Any) -> float | None:
    """Seconds of one step of a model proposer (one with a CachedLM `lm`), with the head it drafts with:
    a reduced vocabulary's rows (`vocab`) or the model's own; None for a proposer without a model."""
    lm = getattr(proposer, "lm", None)
    if not isinstance(lm, CachedLM):
        return None
    vocab = getattr(proposer, "vocab", None)
    return measure_step_seconds(lm, vocab.head if vocab is not None else None)
