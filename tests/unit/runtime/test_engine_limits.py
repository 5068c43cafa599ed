"""The engine never asks a proposer for more than the lookahead limit (fixed k or k_max)."""

from __future__ import annotations

import time
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


def test_every_end_of_sequence_id_ends_generation() -> None:
    from adaspec.runtime.engine import autoregressive_generate, eos_ids

    assert eos_ids(None) == frozenset() and eos_ids(3) == {3} and eos_ids([3, 9]) == {3, 9}
    target = CachedLM(small_llama(32, seed=4))
    free = autoregressive_generate(target, [1, 2, 3], 6)
    second = free[1]
    unused = next(t for t in range(32) if t not in free)
    # Llama-3 style: several ids end a sequence; the second generated token is one of them
    engine = SpeculativeEngine(target, [], None, eos_token_id=[unused, second])
    result = engine.generate([1, 2, 3], 6)
    assert result.token_ids == free[: free.index(second) + 1]
    assert result.finish_reason == "stop"
    assert autoregressive_generate(target, [1, 2, 3], 6, eos_token_id=[unused, second]) == result.token_ids


class CatchingUp(Recorder):
    """Drafts one token; its first call of a request spends 0.2 s catching up, and says so."""

    name = "catching-up"

    def begin(self, request: RequestInfo) -> None:
        self.fresh = True

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        synced = 0.0
        if self.fresh:
            t0 = time.perf_counter()
            time.sleep(0.2)
            synced, self.fresh = time.perf_counter() - t0, False
        return Draft(token_ids=(3,), probs=None, confidence=(0.99,), sync_seconds=synced)


def test_a_proposers_catch_up_is_not_charged_to_its_drafted_tokens() -> None:
    costs = CostModel({1: 1.0, 2: 1.0}, {})
    seen: list[float] = []  # every draft's seconds as the engine reports them (the estimate is robust)
    observe = costs.observe_draft
    costs.observe_draft = lambda name, k, seconds: (seen.append(seconds), observe(name, k, seconds))[1]  # type: ignore[method-assign]
    engine = SpeculativeEngine(_target(), [CatchingUp()], Controller(ControllerConfig(fixed_k=1), costs))
    engine.generate([1, 2, 3], 4)
    # the first call took over 0.2 s for one token; what is left of it after the catch-up is microseconds
    assert seen and all(0.0 <= s < 0.02 for s in seen), seen
    assert 0.0 <= costs.draft["catching-up"] < 0.02, costs.draft


def test_the_catch_up_still_counts_in_the_requests_propose_time() -> None:
    engine = SpeculativeEngine(
        _target(), [CatchingUp()], Controller(ControllerConfig(fixed_k=1), CostModel({1: 1.0}, {}))
    )
    stats = engine.generate([1, 2, 3], 4).stats
    assert stats.propose_seconds >= 0.2  # not a cost of the drafted tokens, but of the request's wall clock
    assert stats.verify_seconds > 0 and stats.propose_seconds + stats.verify_seconds <= stats.decode_seconds
    mine = stats.per_speculator["catching-up"]
    assert mine.proposals == stats.target_forward_passes  # fixed k: asked every step
    assert 0.2 <= mine.sync_seconds <= mine.propose_seconds <= stats.propose_seconds
    plain = SpeculativeEngine(_target(), [], None).generate([1, 2, 3], 4).stats
    assert plain.propose_seconds < 1e-3 and 0 < plain.verify_seconds <= plain.decode_seconds  # no drafting


class Wrong(Recorder):
    """Drafts one token the target never emits, at low confidence."""

    name = "wrong"

    def __init__(self, token: int) -> None:
        super().__init__()
        self.token = token

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        self.asked.append(max_tokens)
        return Draft(token_ids=(self.token,) * max_tokens, probs=None, confidence=(0.1,) * max_tokens)


def test_declined_drafts_are_scored_against_the_target_until_the_proposer_is_not_asked() -> None:
    from adaspec.runtime.engine import autoregressive_generate

    target = _target()
    plain = autoregressive_generate(target, [1, 2, 3], 40)
    wrong = Wrong(next(t for t in range(32) if t not in plain))
    ctl = Controller(ControllerConfig(exploration=0.0), CostModel({1: 1.0, 2: 1.2, 9: 2.0}, {"wrong": 0.05}))
    ctl.costs.observe_verify = lambda q, seconds: None  # type: ignore[method-assign]  # keep the costs given
    for _ in range(10):  # what it learned before: confident drafts accepted, unconfident ones rejected
        ctl.observe("wrong", [0.95], 0, 1)
        ctl.observe("wrong", [0.1], 0, 0)
    assert ctl.plan("wrong", 8).k >= 1  # worth drafting with, before its confidence is known
    assert ctl.choose_k("wrong", [0.1], 0, 0.05)[0] == 0  # not worth verifying at confidence 0.1
    res = SpeculativeEngine(target, [wrong], ctl).generate([1, 2, 3], 40)
    assert res.token_ids == plain
    mine = res.stats.per_speculator["wrong"]
    assert 1 <= mine.proposals < res.stats.target_forward_passes and mine.drafts == 0
    # never verified, and yet learned from: its estimate fell until it was no longer asked
    assert ctl.plan("wrong", 8).k == 0


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_a_draft_with_a_bad_sync_time_is_refused(bad: float) -> None:
    from adaspec.runtime.engine import ProposerError, validate_draft

    with pytest.raises(ProposerError, match="sync_seconds"):
        validate_draft(Draft(token_ids=(3,), probs=None, confidence=(0.5,), sync_seconds=bad), 4, 32)
    with pytest.raises(ProposerError, match="sync_tokens"):
        validate_draft(Draft(token_ids=(3,), probs=None, confidence=(0.5,), sync_tokens=-1), 4, 32)
