"""Adaptive proposers learn a language the static draft never saw, from the target's own outputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.engine import SpeculativeEngine, build_engine
from adaspec.runtime.microbench import cut_prompts
from adaspec.runtime.models import load_tokenizer
from adaspec.runtime.stats import GenerationStats
from adaspec.runtime.workloads import Prompt

MAX_NEW = 32


@pytest.fixture(scope="module")
def go_stream(fixture_dir: Path) -> tuple[list[Prompt], list[Prompt]]:
    """Go requests: a stream to learn from, and held-out evaluation requests from other files."""
    tok = load_tokenizer(fixture_dir / "target")
    go = cut_prompts(tok, "go", 30, length=64, seed=1)
    return go[:20], go[20:]


def _serve(engine: SpeculativeEngine, prompts: list[Prompt]) -> GenerationStats:
    total = GenerationStats()
    for p in prompts:
        total.merge(engine.generate(p.token_ids, MAX_NEW, tag="go").stats)
    assert total.failures == 0
    return total


def _before_after(
    fixture_dir: Path, strategy: str, stream: list[Prompt], held_out: list[Prompt]
) -> tuple[GenerationStats, GenerationStats]:
    """Held-out figures of a fresh engine, and of one that first served the stream (fixed k = 4)."""
    fresh = build_engine(fixture_dir / "target", fixture_dir / "draft", strategy, fixed_k=4)
    before = _serve(fresh, held_out)
    trained = build_engine(fixture_dir / "target", fixture_dir / "draft", strategy, fixed_k=4)
    _serve(trained, stream)
    return before, _serve(trained, held_out)


def test_adaptive_draft_acceptance_rises(
    fixture_dir: Path, go_stream: tuple[list[Prompt], list[Prompt]]
) -> None:
    before, after = _before_after(fixture_dir, "adaptive", *go_stream)
    a0 = before.per_speculator["adaptive"].acceptance_rate
    a1 = after.per_speculator["adaptive"].acceptance_rate
    print(f"adaptive acceptance on held-out Go: before={a0:.3f} after={a1:.3f}")
    # measured on the fixtures: 0.094 -> 0.217
    assert a1 >= a0 + 0.06
    assert a1 >= 1.5 * a0


def test_suffix_tokens_per_pass_rise(fixture_dir: Path, go_stream: tuple[list[Prompt], list[Prompt]]) -> None:
    # The suffix proposer drafts only where it finds a match, so what learning raises is how often it
    # matches: accepted tokens per target pass (its per-token acceptance stays about the same).
    before, after = _before_after(fixture_dir, "suffix", *go_stream)
    m0, m1 = before.mean_accepted_length, after.mean_accepted_length
    print(f"suffix tokens per target pass on held-out Go: before={m0:.3f} after={m1:.3f}")
    # measured on the fixtures: 2.50 -> 2.91; on fixtures rebuilt on another machine (their training is
    # not bit-reproducible across machines): 1.91 -> 2.07
    assert m1 >= m0 + 0.1


def test_online_updates_do_not_set_the_draft_back_on_its_own_language(fixture_dir: Path) -> None:
    """The adaptive draft starts as the static one: with the same lookahead (no controller in the way),
    serving the static draft's own language must not lower its acceptance below the static draft's.

    Both engines draft 4 tokens a step, so before any update they draft the same tokens; a difference
    can only come from the online updates. Before the publication gate (OnlineDistiller._judge) the
    adaptive draft fell to 0.209 against 0.316 here (lr 0.002; 0.268 at 2e-4, 0.290 at 2e-5): fine-tuning
    on a few requests set it back. The gate publishes training weights only once they draft better than
    the served ones on each of several requests they have not learned from.
    """
    tok = load_tokenizer(fixture_dir / "target")
    python = cut_prompts(tok, "python", 40, length=64, seed=3)[20:]
    rates = {}
    for strategy in ("static", "adaptive"):
        engine = build_engine(fixture_dir / "target", fixture_dir / "draft", strategy, fixed_k=4)
        total = GenerationStats()
        for p in python:
            total.merge(engine.generate(p.token_ids, MAX_NEW, tag="python").stats)
        rates[strategy] = total.per_speculator[strategy].acceptance_rate
    print(f"held-out Python acceptance, served in order: {rates}")
    assert rates["adaptive"] >= rates["static"] - 0.01, rates
