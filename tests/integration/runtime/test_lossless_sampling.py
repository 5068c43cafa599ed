"""Speculative sampling draws from the target's own distribution (and a broken verifier is caught)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

import adaspec.runtime.verifystep as verify_step
from adaspec.runtime.engine import autoregressive_generate, build_engine
from adaspec.runtime.proposers.feature import FeatureConfig, FeatureProposer
from adaspec.runtime.sampling import SamplingParams
from adaspec.runtime.verify import Verdict
from adaspec.runtime.workloads import Prompt

DRAWS = 700
SAMPLING = {"temperature": 1.0, "top_k": 3}


def homogeneity_pvalue(a: Counter[tuple[int, ...]], b: Counter[tuple[int, ...]]) -> float:
    """Chi-square test that two samples come from one distribution (cells with < 5 expected pooled)."""
    na, nb = sum(a.values()), sum(b.values())
    cells = sorted(set(a) | set(b))
    rows: list[tuple[float, float]] = []
    pool = [0.0, 0.0]
    for c in cells:
        tot = a[c] + b[c]
        if min(tot * na, tot * nb) / (na + nb) < 5:
            pool[0] += a[c]
            pool[1] += b[c]
        else:
            rows.append((float(a[c]), float(b[c])))
    if sum(pool) > 0:
        rows.append((pool[0], pool[1]))
    stat = 0.0
    for oa, ob in rows:
        tot = oa + ob
        ea, eb = tot * na / (na + nb), tot * nb / (na + nb)
        stat += (oa - ea) ** 2 / ea + (ob - eb) ** 2 / eb
    df = max(len(rows) - 1, 1)
    return float(torch.special.gammaincc(torch.tensor(df / 2.0), torch.tensor(stat / 2.0)))


def _first_tokens(gen: object, prompt: Sequence[int], n: int) -> Counter[tuple[int, ...]]:
    counts: Counter[tuple[int, ...]] = Counter()
    for seed in range(DRAWS):
        out = gen(prompt, SamplingParams(seed=seed, **SAMPLING))  # type: ignore[operator]
        counts[tuple(out[:n])] += 1
    return counts


@pytest.fixture(scope="module")
def go_prompt(prompts: list[Prompt]) -> list[int]:
    return next(list(p.token_ids) for p in prompts if p.lang == "go")


@pytest.fixture(scope="module")
def reference(fixture_dir: Path, go_prompt: list[int]) -> Counter[tuple[int, ...]]:
    engine = build_engine(fixture_dir / "target", None, "target-only")
    return _first_tokens(lambda p, s: autoregressive_generate(engine.target, p, 3, s), go_prompt, 3)


def _speculative(
    fixture_dir: Path, strategy: str, go_prompt: list[int], draft: Path | None = None
) -> Counter[tuple[int, ...]]:
    engine = build_engine(fixture_dir / "target", draft or fixture_dir / "draft", strategy, fixed_k=3)
    if strategy == "feature":  # one small learning step per request keeps 700 requests quick
        cfg = FeatureConfig(steps_per_request=1, batch_size=1)
        engine.replace_proposer(FeatureProposer(engine.target.model, cfg))
    return _first_tokens(lambda p, s: engine.generate(p, 3, s).token_ids, go_prompt, 3)


@pytest.mark.parametrize("strategy", ["static", "feature"])
def test_draft_sampling_matches_target(
    strategy: str, fixture_dir: Path, go_prompt: list[int], reference: Counter[tuple[int, ...]]
) -> None:
    """The static draft's proposals, and the feature draft's (sampled over its reduced vocabulary, and
    learning between requests), both leave the committed tokens distributed as the target's."""
    got = _speculative(fixture_dir, strategy, go_prompt)
    assert homogeneity_pvalue(reference, got) > 1e-3


def test_a_reduced_vocabulary_draft_samples_the_target_distribution(
    fixture_dir: Path, ranked_draft: Path, go_prompt: list[int], reference: Counter[tuple[int, ...]]
) -> None:
    """The static draft over its 256 most counted ids (q is zero elsewhere, where the target may still
    put mass): the committed tokens are distributed as the target's."""
    got = _speculative(fixture_dir, "static", go_prompt, ranked_draft)
    assert homogeneity_pvalue(reference, got) > 1e-3


def test_broken_verification_is_detected(
    fixture_dir: Path,
    go_prompt: list[int],
    reference: Counter[tuple[int, ...]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def accept_everything(
        p: torch.Tensor, q: torch.Tensor | None, draft: Sequence[int], g: object
    ) -> Verdict:
        return Verdict(
            num_accepted=len(draft), next_token=int(torch.multinomial(p[len(draft)], 1, generator=g))
        )

    monkeypatch.setattr(verify_step, "verify_sampling", accept_everything)
    got = _speculative(fixture_dir, "static", go_prompt)
    assert homogeneity_pvalue(reference, got) < 1e-4
