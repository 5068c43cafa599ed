"""A failing proposer never changes the output: the step decodes plainly and the failure is counted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from adaspec.runtime.controller import Controller, ControllerConfig, CostModel
from adaspec.runtime.engine import SpeculativeEngine, autoregressive_generate
from adaspec.runtime.models import CachedLM, load_causal_lm
from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting
from adaspec.runtime.sampling import SamplingParams
from adaspec.runtime.workloads import Prompt


class Broken:
    """A proposer that fails in a chosen way on every other step."""

    def __init__(self, mode: str, vocab: int) -> None:
        self.name = f"broken-{mode}"
        self.mode = mode
        self.vocab = vocab
        self.calls = 0

    def begin(self, request: RequestInfo) -> None:
        pass

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        self.calls += 1
        k = min(3, max_tokens)
        if self.calls % 2 == 0 or self.mode == "behind":  # a valid (usually wrong) draft, also verified
            return Draft(token_ids=tuple([7] * k), probs=None, confidence=tuple([0.9] * k))
        if self.mode == "raise":
            raise RuntimeError("speculator crashed")
        if self.mode == "nan":
            probs = torch.full((k, self.vocab), float("nan"))
            return Draft(token_ids=tuple([1] * k), probs=probs, confidence=tuple([0.9] * k))
        if self.mode == "shape":
            return Draft(token_ids=tuple([1] * k), probs=torch.ones(k + 1, 3), confidence=tuple([0.9] * k))
        if self.mode == "range":
            return Draft(token_ids=(self.vocab + 5,), probs=None, confidence=(0.9,))
        raise AssertionError(self.mode)

    def behind(self, context: Sequence[int]) -> int:
        """How far behind it is: in mode "behind", a failure on every other call."""
        if self.mode == "behind" and self.calls % 2:
            raise RuntimeError("cannot say how far behind")
        return 0

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        pass

    def end(self, output_ids: Sequence[int]) -> None:
        pass


@pytest.mark.parametrize("mode", ["raise", "nan", "shape", "range", "behind"])
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_failures_fall_back_with_identical_output(
    mode: str, temperature: float, fixture_dir: Path, prompts: list[Prompt]
) -> None:
    target = CachedLM(load_causal_lm(fixture_dir / "target", "target"))
    broken = Broken(mode, target.vocab_size)
    cfg = ControllerConfig(fixed_k=3, exploration=0.0)
    engine = SpeculativeEngine(target, [broken], Controller(cfg, CostModel({1: 1.0}, {})), eos_token_id=0)
    sampling = SamplingParams(temperature=temperature, seed=3)
    for p in prompts[:3]:
        res = engine.generate(p.token_ids, 16, sampling)
        stats = res.stats.per_speculator[broken.name]
        assert stats.failures >= 1
        assert stats.drafts >= 1  # the valid drafts were verified
        if temperature == 0.0:
            assert res.token_ids == autoregressive_generate(target, p.token_ids, 16, eos_token_id=0)
        else:
            assert len(res.token_ids) == 16 or res.token_ids[-1] == 0
