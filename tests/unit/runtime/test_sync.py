"""Model proposers catch up on a long run of committed tokens (the prompt) in a pass of their own, timed
as the draft's `sync_seconds`, with the same drafts as catching up in the drafting pass."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from adaspec.runtime.models import CachedLM, small_llama
from adaspec.runtime.proposers import base
from adaspec.runtime.proposers.base import Draft, RequestInfo
from adaspec.runtime.proposers.feature import FeatureConfig, FeatureProposer, target_features
from adaspec.runtime.proposers.static import DraftModelProposer

PROMPT = [(7 * i + 3) % 61 for i in range(40)]


def _static_drafts(monkeypatch: pytest.MonkeyPatch, split: int) -> list[Draft]:
    monkeypatch.setattr(base, "SYNC_SPLIT", split)
    prop = DraftModelProposer(CachedLM(small_llama(64, hidden=32, layers=2, seed=3)))
    prop.begin(RequestInfo(prompt_ids=tuple(PROMPT)))
    assert prop.behind(PROMPT) == (len(PROMPT) - 1 if split < len(PROMPT) else 0)
    first = prop.propose(PROMPT, 4, None)
    ctx = PROMPT + [first.token_ids[0], 5]  # two tokens committed since
    assert prop.behind(ctx) == 0
    return [first, prop.propose(ctx, 4, None)]


def _feature_drafts(monkeypatch: pytest.MonkeyPatch, split: int) -> list[Draft]:
    monkeypatch.setattr(base, "SYNC_SPLIT", split)
    target = small_llama(64, hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, seed=1)
    prop = FeatureProposer(target, FeatureConfig(vocab_size=64, seed=2))
    ctx = list(PROMPT)
    prop.begin(RequestInfo(prompt_ids=tuple(ctx)))
    prop.observe_features(0, target_features(target, ctx)[:-1])
    assert prop.behind(ctx) == (len(PROMPT) - 1 if split < len(PROMPT) else 0)
    first = prop.propose(ctx, 4, None)
    ctx += [first.token_ids[0], 5]
    prop.observe_features(len(PROMPT) - 1, target_features(target, ctx)[len(PROMPT) - 1 : -1])
    return [first, prop.propose(ctx, 4, None)]


@pytest.mark.parametrize("drafts", [_static_drafts, _feature_drafts], ids=["static", "feature"])
def test_a_long_catch_up_is_timed_apart_and_drafts_the_same(
    monkeypatch: pytest.MonkeyPatch, drafts: Any
) -> None:
    assert base.SYNC_SPLIT < len(PROMPT)
    with torch.no_grad():
        split = drafts(monkeypatch, base.SYNC_SPLIT)
        whole = drafts(monkeypatch, 10**6)  # never split: the catch-up rides in the drafting pass
    assert split[0].sync_seconds > 0.0 and whole[0].sync_seconds == 0.0
    assert split[1].sync_seconds == 0.0  # two committed tokens: no pass of their own
    assert (split[0].sync_tokens, whole[0].sync_tokens, split[1].sync_tokens) == (len(PROMPT) - 1, 0, 0)
    for a, b in zip(split, whole, strict=True):
        assert a.token_ids == b.token_ids
        assert a.confidence == pytest.approx(b.confidence, abs=1e-5)


def test_the_engine_learns_a_real_draft_models_catch_up_cost() -> None:
    """The seam: the engine asks the real proposer how far behind it is, and the controller learns the
    cost of the catch-up pass that proposer reports."""
    from adaspec.runtime.controller import Controller, ControllerConfig, CostModel
    from adaspec.runtime.engine import SpeculativeEngine

    prop = DraftModelProposer(CachedLM(small_llama(64, hidden=32, layers=2, seed=3)))
    ctl = Controller(ControllerConfig(fixed_k=2), CostModel({1: 1.0}, {}))
    asked: list[int] = []
    measure = prop.behind
    prop.behind = lambda context: asked.append(measure(context)) or asked[-1]  # type: ignore[method-assign]
    stats = SpeculativeEngine(CachedLM(small_llama(64, seed=4)), [prop], ctl).generate(PROMPT, 6).stats
    assert asked[0] == len(PROMPT) - 1 and set(asked[1:]) == {0}  # the prompt, then caught up each step
    assert stats.per_speculator["static"].sync_seconds > 0 and "static" in ctl.costs.sync  # learned
    assert ctl.costs.t_sync("static", len(PROMPT) - 1) >= ctl.costs.t_draft("static", 1) > 0.0
