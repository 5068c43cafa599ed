"""The engine never asks a proposer for more than the lookahead limit (fixed k or k_max)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from adaspec.runtime.controller import Controller, ControllerConfig, CostModel
from adaspec.runtime.engine import SpeculativeEngine
from adaspec.runtime.models import CachedLM, small_llama
from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting


class Recorder:
    """Proposes a constant token, as many as asked, and records what it was asked for."""

    name = "recorder"

    def __init__(self) -> None:
        self.asked: list[int] = []

    def begin(self, request: RequestInfo) -> None:
        pass

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        self.asked.append(max_tokens)
        return Draft(token_ids=(3,) * max_tokens, probs=None, confidence=(0.99,) * max_tokens)

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        pass

    def end(self, output_ids: Sequence[int]) -> None:
        pass


def _target() -> CachedLM:
    return CachedLM(small_llama(32))


@pytest.mark.parametrize(("cfg", "limit"), [(ControllerConfig(fixed_k=4), 4), (ControllerConfig(k_max=3), 3)])
def test_lookahead_limit_is_respected(cfg: ControllerConfig, limit: int) -> None:
    rec = Recorder()
    engine = SpeculativeEngine(_target(), [rec], Controller(cfg, CostModel({1: 1.0}, {})))
    res = engine.generate([1, 2, 3], 40)
    assert len(res.token_ids) == 40
    assert rec.asked and max(rec.asked) <= limit
    assert all(k >= 1 for k in rec.asked)
