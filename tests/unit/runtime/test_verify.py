"""Verification is lossless: greedy keeps the target's argmax path, sampling keeps its distribution."""

from __future__ import annotations

import itertools

import pytest
import torch

from adaspec.runtime.verify import Verdict, verify_greedy, verify_sampling


def chi_square_pvalue(observed: list[int], expected_probs: list[float]) -> float:
    """Pearson chi-square goodness-of-fit p-value (cells with tiny expectation are pooled)."""
    n = sum(observed)
    obs, exp = [], []
    pool_o, pool_e = 0.0, 0.0
    for o, p in zip(observed, expected_probs, strict=True):
        if p * n < 5:
            pool_o, pool_e = pool_o + o, pool_e + p * n
        else:
            obs.append(float(o))
            exp.append(p * n)
    if pool_e > 0:
        obs.append(pool_o)
        exp.append(pool_e)
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True))
    df = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0), torch.tensor(stat / 2.0)))


def test_greedy_accepts_matching_prefix_then_target_token() -> None:
    logits = torch.full((4, 5), -1.0)
    for row, tok in enumerate([2, 3, 1, 4]):
        logits[row, tok] = 5.0
    assert verify_greedy(logits, [2, 3, 0]) == Verdict(num_accepted=2, next_token=1)
    assert verify_greedy(logits, [2, 3, 1]) == Verdict(num_accepted=3, next_token=4)  # bonus
    assert verify_greedy(logits, [0, 3, 1]) == Verdict(num_accepted=0, next_token=2)
    assert verify_greedy(logits[:1], []) == Verdict(num_accepted=0, next_token=2)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="k\\+1"):
        verify_greedy(torch.zeros(2, 5), [1, 2])
    with pytest.raises(ValueError, match="draft_probs"):
        verify_sampling(torch.full((3, 4), 0.25), torch.full((1, 4), 0.25), [1, 2], None)


def _joint_first_two(
    p: torch.Tensor, q: torch.Tensor | None, draws: int, seed: int, broken: bool = False
) -> list[int]:
    """Counts of (token1, token2) committed by speculative sampling with a 2-token draft."""
    vocab = p.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    counts = [0] * (vocab * vocab)
    for _ in range(draws):
        if q is None:  # deterministic proposer: always the same two tokens
            draft = [1, 2]
        else:
            draft = [int(torch.multinomial(q[0], 1, generator=gen)), 0]
            draft[1] = int(torch.multinomial(q[1], 1, generator=gen))
        if broken:  # wrong: accept every draft token
            committed = [*draft, 0]
        else:
            v = verify_sampling(p, q, draft, gen)
            committed = v.committed(draft)
            if len(committed) < 2:  # rejected at position 0: the next token is sampled from p[1]
                committed.append(int(torch.multinomial(p[1], 1, generator=gen)))
        counts[committed[0] * vocab + committed[1]] += 1
    return counts


@pytest.mark.parametrize("deterministic", [False, True])
def test_sampling_matches_target_distribution(deterministic: bool) -> None:
    torch.manual_seed(1)
    vocab = 5
    # The target's second-position distribution does not depend on the first token here (fixed rows),
    # so the joint distribution of the first two committed tokens is p0 x p1.
    p = torch.softmax(torch.randn(3, vocab) * 1.5, dim=-1)
    q = None if deterministic else torch.softmax(torch.randn(2, vocab) * 1.5, dim=-1)
    counts = _joint_first_two(p, q, draws=6000, seed=7)
    expected = [float(p[0, a] * p[1, b]) for a, b in itertools.product(range(vocab), range(vocab))]
    assert chi_square_pvalue(counts, expected) > 1e-3


def test_broken_verification_is_detected_by_the_same_test() -> None:
    torch.manual_seed(1)
    vocab = 5
    p = torch.softmax(torch.randn(3, vocab) * 1.5, dim=-1)
    q = torch.softmax(torch.randn(2, vocab) * 1.5, dim=-1)
    counts = _joint_first_two(p, q, draws=6000, seed=7, broken=True)
    expected = [float(p[0, a] * p[1, b]) for a, b in itertools.product(range(vocab), range(vocab))]
    assert chi_square_pvalue(counts, expected) < 1e-6
