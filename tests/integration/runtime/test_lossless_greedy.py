"""Greedy speculative decoding returns exactly the target's own tokens, for every strategy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adaspec.runtime.engine import autoregressive_generate, build_engine
from adaspec.runtime.models import load_causal_lm
from adaspec.runtime.proposers.base import Draft
from adaspec.runtime.proposers.static import DraftModelProposer
from adaspec.runtime.workloads import Prompt

MAX_NEW = 24


@pytest.fixture(scope="module")
def hf_reference(fixture_dir: Path, prompts: list[Prompt]) -> list[list[int]]:
    """transformers' own generate(do_sample=False) on each prompt."""
    model = load_causal_lm(fixture_dir / "target", "target")
    out = []
    for p in prompts:
        ids = torch.tensor([p.token_ids])
        with torch.inference_mode():
            gen = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=MAX_NEW,
                eos_token_id=0,
                pad_token_id=0,
            )
        out.append(gen[0, len(p.token_ids) :].tolist())
    return out


@pytest.mark.parametrize(
    "strategy", ["target-only", "static", "suffix", "adaptive", "hybrid", "feature", "hybrid-feature"]
)
def test_every_strategy_equals_transformers_generate(
    strategy: str, fixture_dir: Path, prompts: list[Prompt], hf_reference: list[list[int]]
) -> None:
    engine = build_engine(fixture_dir / "target", fixture_dir / "draft", strategy)
    drafted = 0
    for p, ref in zip(prompts, hf_reference, strict=True):
        res = engine.generate(p.token_ids, MAX_NEW, tag=p.lang)
        assert res.token_ids == ref, f"{strategy} diverged from the target on a {p.lang} prompt"
        drafted += sum(s.draft_tokens for s in res.stats.per_speculator.values())
        assert res.stats.generated_tokens == len(ref)
    if strategy != "target-only":
        assert drafted > 0, "the strategy never speculated, so this test would prove nothing"


@pytest.mark.parametrize("strategy", ["static", "adaptive", "hybrid"])
def test_a_draft_with_token_counts_drafts_a_reduced_vocabulary_losslessly(
    strategy: str, fixture_dir: Path, ranked_draft: Path, prompts: list[Prompt], hf_reference: list[list[int]]
) -> None:
    """build_engine reads the draft directory's vocab.safetensors: the model drafts draft the 256 most
    counted ids only, every drafted token is one of them, and the output is still the target's."""
    engine = build_engine(fixture_dir / "target", ranked_draft, strategy)
    models = [p for p in engine.proposers.values() if isinstance(p, DraftModelProposer)]
    assert models and all(p.vocab is not None and len(p.vocab.ids) == 256 for p in models)
    drafted: list[int] = []
    outside: list[int] = []

    def recording(model: DraftModelProposer) -> Any:
        inner = model.propose

        def propose(context: Any, max_tokens: int, stop: Any) -> Draft:
            draft = inner(context, max_tokens, stop)
            ids = set(model.vocab.ids.tolist()) if model.vocab is not None else set()
            drafted.extend(draft.token_ids)
            outside.extend(t for t in draft.token_ids if t not in ids)
            return draft

        return propose

    for m in models:
        m.propose = recording(m)  # type: ignore[method-assign]
    for p, ref in zip(prompts, hf_reference, strict=True):
        res = engine.generate(p.token_ids, MAX_NEW, tag=p.lang)
        assert res.token_ids == ref, f"{strategy} with a reduced vocabulary diverged on a {p.lang} prompt"
    assert drafted, "the model drafts never drafted, so this test would prove nothing"
    assert not outside, f"drafted ids outside the reduced vocabulary: {outside[:10]}"


def test_plain_baseline_equals_transformers_generate(
    fixture_dir: Path, prompts: list[Prompt], hf_reference: list[list[int]]
) -> None:
    engine = build_engine(fixture_dir / "target", None, "target-only")
    for p, ref in zip(prompts, hf_reference, strict=True):
        assert autoregressive_generate(engine.target, p.token_ids, MAX_NEW, eos_token_id=0) == ref


def test_an_offline_trained_feature_draft_is_lossless_and_drafts_better_than_an_untrained_one(
    fixture_dir: Path, feature_draft: Path, prompts: list[Prompt], hf_reference: list[list[int]]
) -> None:
    """train-draft --arch feature's revision, loaded by build_engine (checksums checked), drafts well from
    the first request: more of its drafted tokens are accepted on Python than an untrained draft's."""
    rates = {}
    for name, init in (("trained", feature_draft), ("untrained", None)):
        # one token a step: its acceptance is the draft's top-1 agreement (the controller's k follows timings)
        engine = build_engine(fixture_dir / "target", None, "feature", fixed_k=1, feature_draft_dir=init)
        accepted = drafted = 0
        for p, ref in zip(prompts, hf_reference, strict=True):
            if p.lang != "python":
                continue
            res = engine.generate(p.token_ids, MAX_NEW, tag=p.lang)
            assert res.token_ids == ref, f"the {name} feature draft diverged from the target"
            stats = res.stats.per_speculator["feature"]
            accepted, drafted = accepted + stats.accepted_tokens, drafted + stats.draft_tokens
        rates[name] = accepted / max(1, drafted)
    print(f"feature draft acceptance on Python {rates}")
    assert rates["trained"] > rates["untrained"] + 0.05
