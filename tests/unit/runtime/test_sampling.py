"""The sampling transform is shared by target and draft; bad parameters name themselves."""

from __future__ import annotations

import pytest
import torch

from adaspec.runtime.sampling import SamplingParams, logits_to_probs


def test_greedy_is_one_hot_at_argmax() -> None:
    probs = logits_to_probs(torch.tensor([[0.1, 3.0, -1.0]]), SamplingParams())
    assert probs.tolist() == [[0.0, 1.0, 0.0]]


def test_top_k_and_top_p_cut_the_tail() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = logits_to_probs(logits, SamplingParams(temperature=1.0, top_k=2))
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = logits_to_probs(logits, SamplingParams(temperature=1.0, top_p=0.8))
    # smallest prefix reaching 0.8 is {0.5, 0.3}
    assert torch.allclose(p, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    p = logits_to_probs(logits, SamplingParams(temperature=1.0, top_p=0.81))
    assert p[0, 2] > 0 and p[0, 3] == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p"), ({"top_k": -2}, "top_k")],
)
def test_bad_parameters_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_gumbel_scores_sample_the_distribution_and_depend_only_on_seed_and_position() -> None:
    import torch

    from adaspec.runtime.sampling import gumbel_scores

    p = torch.tensor([[0.6, 0.3, 0.1, 0.0]])  # [1, 4]
    picks = [int(gumbel_scores(p, seed, 5)[0].argmax()) for seed in range(3000)]
    freq = [picks.count(t) / len(picks) for t in range(4)]
    assert abs(freq[0] - 0.6) < 0.03 and abs(freq[1] - 0.3) < 0.03 and freq[3] == 0.0
    again = [int(gumbel_scores(p, seed, 5)[0].argmax()) for seed in range(50)]
    assert again == picks[:50]  # the same (seed, position), the same token
    other = [int(gumbel_scores(p, seed, 6)[0].argmax()) for seed in range(50)]
    assert other != picks[:50]  # another position, other noise
