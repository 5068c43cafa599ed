"""The adaptive proposer learns in a background thread and swaps weights only between requests."""

from __future__ import annotations

import time
from typing import Any

import torch

from adaspec.runtime.controller import Controller, ControllerConfig, CostModel
from adaspec.runtime.engine import SpeculativeEngine
from adaspec.runtime.models import CachedLM, small_llama
from adaspec.runtime.proposers.adaptive import GATE_WINDOW, AdaptiveConfig, AdaptiveProposer, chain_lengths

PROMPT = [11, 3, 25, 8]  # the target continues 8, 8, ...; the seed-1 draft first says 31


def _tiny(seed: int) -> Any:
    return small_llama(32, seed=seed)


def test_background_training_publishes_weights_between_requests() -> None:
    """The same request again and again: the training copy learns the target's output, gets ahead of the
    served weights on the requests it has not learned from yet, and is published; serving swaps it in
    only when a request begins. (These random models' next-token distributions are nearly flat, so the
    draft learns the target's top token only: soft_top_k=1; the draft misses the first generated one.)"""
    estimates: list[tuple[str, float]] = []
    cfg = AdaptiveConfig(background=True, compute_share=0.5, steps_per_request=2, soft_top_k=1)
    prop = AdaptiveProposer(CachedLM(_tiny(1)), cfg, on_estimate=lambda n, a: estimates.append((n, a)))
    target = CachedLM(_tiny(0))
    engine = SpeculativeEngine(
        target, [prop], Controller(ControllerConfig(fixed_k=2), CostModel({1: 1.0}, {}))
    )
    try:
        before = {k: v.clone() for k, v in prop.lm.model.state_dict().items()}
        outputs = []
        deadline = time.monotonic() + 120
        while prop.distiller.version == 0 and time.monotonic() < deadline:
            outputs.append(engine.generate(PROMPT, 12).token_ids)
            time.sleep(0.3)  # the worker judges the request, then learns from it
        assert prop.distiller.version > 0, "the training copy never got ahead of the served weights"
        assert len(outputs) >= 1 + GATE_WINDOW  # one request to learn from, then a win on each of the next
        if prop.served_version == 0:  # published after the last request began: not drafting yet
            assert all(torch.equal(before[k], v) for k, v in prop.lm.model.state_dict().items())
        outputs.append(engine.generate(PROMPT, 12).token_ids)
        assert prop.served_version > 0
        assert any(not torch.equal(before[k], v) for k, v in prop.lm.model.state_dict().items())
        assert len(set(map(tuple, outputs))) == 1  # learning never changes what the target generates
        assert estimates and estimates[0][0] == "adaptive" and 0.0 <= estimates[0][1] <= 1.0
    finally:
        prop.close()
    assert prop.trainer.worker is not None and not prop.trainer.worker.is_alive()


def test_chain_lengths_count_what_a_k_token_chain_would_have_accepted() -> None:
    hits = torch.tensor([True, True, False, True, True, True, True, True])
    assert chain_lengths(hits, k=4).tolist() == [2, 1, 0, 4, 4, 3, 2, 1]


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
