"""Measured step costs that explain the wall clock: target decode, verify against q, draft step."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from adaspec.runtime.cpukernels import TuningReport, tune_linears


def _median_ms(model: Any, context: torch.Tensor, q: int, repeats: int) -> float:
    """Median milliseconds of one forward of q new tokens on top of a cached context [1, n]."""
    from transformers import DynamicCache

    cache = DynamicCache()
    with torch.inference_mode():
        model(context, cache=cache, use_cache=True)
        new = context[:, -q:].clone()  # [1, q]
        times = []
        for _ in range(repeats + 1):
            started = time.perf_counter()
            model(new, cache=cache, use_cache=True)
            times.append((time.perf_counter() - started) * 1000.0)
            cache.crop(-q)  # roll back the q new tokens (transformers 5: negative = remove)
    return statistics.median(times[1:])  # the first call warms up


def _verify_costs(model: Any, context: torch.Tensor, qs: Sequence[int], repeats: int) -> dict[str, Any]:
    verify = {q: _median_ms(model, context, q, repeats) for q in qs}
    step = verify[min(qs)]
    return {
        "target_step_ms": step,
        "verify_ms": {str(q): v for q, v in verify.items()},
        "verify_cost_vs_q1": {str(q): v / step for q, v in verify.items()},
    }


def measure_costs(
    target_dir: Path,
    draft_dir: Path | None,
    context_tokens: int = 320,
    qs: Sequence[int] = (1, 2, 4, 5, 8),
    repeats: int = 5,
    plan: TuningReport | None = None,
) -> dict[str, Any]:
    """Return target step ms, verify cost for q tokens relative to q=1, draft step ms and their ratio.

    The figures are for the kernels the engines ran (tuned by `plan`, see cpukernels.py); the same
    target with plain F.linear is measured beside them under `untuned`, to show what tuning changed.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    target: Any = AutoModelForCausalLM.from_pretrained(str(target_dir))
    target.eval()
    vocab = int(target.config.vocab_size)
    context = torch.randint(0, vocab, (1, context_tokens))  # [1, context_tokens]
    untuned = _verify_costs(target, context, qs, repeats)
    plan = tune_linears(target, report=plan)
    out: dict[str, Any] = {
        "context_tokens": context_tokens,
        **_verify_costs(target, context, qs, repeats),
        "draft_step_ms": None,
        "draft_target_ratio": None,
        "untuned": untuned,
    }
    if draft_dir is not None:
        draft: Any = AutoModelForCausalLM.from_pretrained(str(draft_dir))
        draft.eval()
        tune_linears(draft, report=plan)
        draft_ms = _median_ms(draft, context, 1, repeats)
        out["draft_step_ms"] = draft_ms
        out["draft_target_ratio"] = draft_ms / out["target_step_ms"]
    return out
