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


def test_a_failing_background_step_is_counted_and_logged(caplog: Any) -> None:
    import logging

    cfg = AdaptiveConfig(background=True, compute_share=1.0, steps_per_request=1)
    prop = AdaptiveProposer(CachedLM(_tiny(1)), cfg)
    target = CachedLM(_tiny(0))
    engine = SpeculativeEngine(
        target, [prop], Controller(ControllerConfig(fixed_k=2), CostModel({1: 1.0}, {}))
    )

    def broken() -> bool:
        raise RuntimeError("device mismatch")

    prop.distiller.step = broken  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.ERROR, logger="adaspec.adaptive"):
            first = engine.generate([1, 2, 3, 4], 8).token_ids
            deadline = time.monotonic() + 30
            while prop.train_failures == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert prop.train_failures == 1
            assert "event=adaptive_train_failure" in caplog.text and "device mismatch" in caplog.text
            assert engine.generate([1, 2, 3, 4], 8).token_ids == first  # serving goes on, unchanged
            deadline = time.monotonic() + 30
            while prop.train_failures < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert prop.train_failures == 2  # the worker lived on and tried again
    finally:
        prop.close()


def test_examples_follow_the_training_model_to_its_device() -> None:
    from adaspec.runtime.proposers.adaptive import Example

    ex = Example(torch.tensor([1, 2, 3]), 1, torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4))
    meta = ex.to(torch.device("meta"))  # any device other than the CPU the example was built on
    assert {t.device.type for t in (meta.tokens, meta.top_ids, meta.top_logp)} == {"meta"}
    assert meta.gen_start == 1
