"""The adaptive proposer learns in a background thread and swaps weights only between requests."""

from __future__ import annotations

import time
from typing import Any

import torch

from adaspec.runtime.controller import Controller, ControllerConfig, CostModel
from adaspec.runtime.engine import SpeculativeEngine
from adaspec.runtime.models import CachedLM, small_llama
from adaspec.runtime.proposers.adaptive import AdaptiveConfig, AdaptiveProposer


def _tiny(seed: int) -> Any:
    return small_llama(32, seed=seed)


def test_background_training_publishes_weights_between_requests() -> None:
    estimates: list[tuple[str, float]] = []
    cfg = AdaptiveConfig(background=True, compute_share=0.5, steps_per_request=2)
    prop = AdaptiveProposer(CachedLM(_tiny(1)), cfg, on_estimate=lambda n, a: estimates.append((n, a)))
    target = CachedLM(_tiny(0))
    engine = SpeculativeEngine(
        target, [prop], Controller(ControllerConfig(fixed_k=2), CostModel({1: 1.0}, {}))
    )
    try:
        before = {k: v.clone() for k, v in prop.lm.model.state_dict().items()}
        outputs = [engine.generate([1, 2, 3, 4], 12).token_ids]
        deadline = time.monotonic() + 60
        while prop.distiller.version == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert prop.distiller.version > 0, "the background trainer never stepped"
        # weights change only when the next request begins
        assert all(torch.equal(before[k], v) for k, v in prop.lm.model.state_dict().items())
        outputs.append(engine.generate([1, 2, 3, 4], 12).token_ids)
        assert any(not torch.equal(before[k], v) for k, v in prop.lm.model.state_dict().items())
        assert outputs[0] == outputs[1]  # learning never changes what the target generates
        assert estimates and estimates[0][0] == "adaptive" and 0.0 <= estimates[0][1] <= 1.0
    finally:
        prop.close()
    assert prop._worker is not None and not prop._worker.is_alive()
