"""Draft trees: the mask sees ancestors only, greedy follows the argmax, sampling keeps the target's law."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from adaspec.runtime import tree as tree_mod
from adaspec.runtime.tree import (
    MAX_TREE_NODES,
    DraftTree,
    TreeVerdict,
    tree_attention_mask,
    tree_position_ids,
    tree_visibility,
    verify_tree_greedy,
    verify_tree_sampling,
)
from adaspec.runtime.verify import verify_greedy, verify_sampling

from .test_verify import chi_square_pvalue

# root -> 0 -> 2 -> 3, root -> 1 -> 4
HAND_TREE = DraftTree(token_ids=(5, 6, 7, 8, 9), parents=(-1, -1, 0, 2, 1))


def test_mask_and_positions_of_a_hand_built_tree() -> None:
    # rows/cols: pending, node0..node4
    expected_vis = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],  # pending: itself
            [1, 1, 0, 0, 0, 0],  # node0: pending, 0
            [1, 0, 1, 0, 0, 0],  # node1: pending, 1
            [1, 1, 0, 1, 0, 0],  # node2: pending, 0, 2
            [1, 1, 0, 1, 1, 0],  # node3: pending, 0, 2, 3
            [1, 0, 1, 0, 0, 1],  # node4: pending, 1, 4
        ],
        dtype=torch.bool,
    )
    assert torch.equal(tree_visibility(HAND_TREE), expected_vis)
    mask = tree_attention_mask(HAND_TREE, past_len=2)
    assert mask.shape == (1, 1, 6, 8)
    seen = mask[0, 0] == 0.0  # [6, 8]
    assert seen[:, :2].all()  # everyone sees the past
    assert torch.equal(seen[:, 2:], expected_vis)
    assert (mask[0, 0][~seen] == torch.finfo(torch.float32).min).all()
    assert tree_attention_mask(HAND_TREE, 0, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert tree_position_ids(HAND_TREE, past_len=2).tolist() == [[2, 3, 3, 4, 5, 4]]


def test_chain_mask_is_causal() -> None:
    chain = DraftTree.chain([4, 5, 6])
    assert chain.parents == (-1, 0, 1)
    assert torch.equal(tree_visibility(chain), torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    assert tree_position_ids(chain, 7).tolist() == [[7, 8, 9, 10]]


def test_structure_helpers() -> None:
    assert HAND_TREE.children(-1) == (0, 1)
    assert HAND_TREE.children(0) == (2,)
    assert HAND_TREE.children(3) == ()
    assert [HAND_TREE.depth(i) for i in range(5)] == [1, 1, 2, 3, 2]
    assert HAND_TREE.max_depth == 3
    assert HAND_TREE.path(3) == (0, 2, 3)
    assert HAND_TREE.path(4) == (1, 4)
    HAND_TREE.check_path((0, 2, 3))
    HAND_TREE.check_path(())
    with pytest.raises(ValueError, match="not a child"):
        HAND_TREE.check_path((0, 4))
    with pytest.raises(ValueError, match="node index"):
        HAND_TREE.path(5)


def test_from_branches_merges_shared_prefixes() -> None:
    tree = DraftTree.from_branches([[1, 2, 3], [1, 2, 4], [5], [1, 6], [], [5]])
    assert tree.token_ids == (1, 2, 3, 4, 5, 6)
    assert tree.parents == (-1, 0, 1, 1, -1, 0)
    assert tree.children(-1) == (0, 4)
    assert tree.children(0) == (1, 5)
    assert [tree.token_ids[i] for i in tree.path(3)] == [1, 2, 4]
    assert DraftTree.from_branches([]).n == 0
    # the same token under different parents is two nodes
    assert DraftTree.from_branches([[1, 1], [2, 1]]).token_ids == (1, 1, 2, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"token_ids": (1, 2), "parents": (-1,)}, "parents has 1"),
        ({"token_ids": (1, 2), "parents": (1, -1)}, "parents\\[0\\]"),
        ({"token_ids": (1, 2), "parents": (-1, 1)}, "parents\\[1\\]"),
        ({"token_ids": (1, -2), "parents": (-1, 0)}, "token_ids\\[1\\]"),
        ({"token_ids": (1,), "parents": (-1,), "confidence": (0.5, 0.5)}, "confidence has 2"),
        ({"token_ids": (1,), "parents": (-1,), "confidence": (1.5,)}, "confidence\\[0\\]"),
        ({"token_ids": (1,), "parents": (-1,), "probs": torch.ones(2, 4) / 4}, "probs must have shape"),
        ({"token_ids": (7,), "parents": (-1,), "probs": torch.ones(1, 4) / 4}, "outside probs"),
        ({"token_ids": (1,), "parents": (-1,), "probs": torch.ones(1, 4, dtype=torch.long)}, "floating"),
    ],
)
def test_invalid_trees_are_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DraftTree(**kwargs)  # type: ignore[arg-type]


def test_node_count_is_bounded() -> None:
    n = MAX_TREE_NODES + 1
    with pytest.raises(ValueError, match="MAX_TREE_NODES"):
        DraftTree(token_ids=(0,) * n, parents=tuple(range(-1, n - 1)))
    with pytest.raises(ValueError, match="MAX_TREE_NODES"):
        DraftTree.from_branches([[i] for i in range(n)])
    assert DraftTree.chain([0] * MAX_TREE_NODES).n == MAX_TREE_NODES


def test_greedy_on_a_chain_equals_verify_greedy() -> None:
    rng = random.Random(0)
    torch.manual_seed(0)
    vocab = 6
    for _ in range(300):
        k = rng.randint(0, 6)
        logits = torch.randn(k + 1, vocab)  # [k+1, vocab]
        argmax = logits.argmax(dim=-1).tolist()
        # mostly agree with the target so that every acceptance length occurs
        draft = [argmax[i] if rng.random() < 0.75 else rng.randrange(vocab) for i in range(k)]
        v = verify_greedy(logits, draft)
        tv = verify_tree_greedy(logits, DraftTree.chain(draft))
        assert (tv.num_accepted, tv.next_token) == (v.num_accepted, v.next_token)
        assert tv.path == tuple(range(v.num_accepted))
        assert tv.committed(DraftTree.chain(draft)) == v.committed(draft)


def test_greedy_follows_the_branch_the_target_picks() -> None:
    # HAND_TREE tokens: node0=5, node1=6, node2=7 (under 0), node3=8 (under 2), node4=9 (under 1)
    def logits_for(argmax: list[int]) -> torch.Tensor:
        out = torch.zeros(6, 10)  # [n+1, vocab]
        for row, tok in enumerate(argmax):
            out[row, tok] = 1.0
        return out

    # the target wants 6 then 9 (second branch), then 3 after node4
    v = verify_tree_greedy(logits_for([6, 0, 9, 0, 0, 3]), HAND_TREE)
    assert v == TreeVerdict(path=(1, 4), next_token=3)
    assert v.committed(HAND_TREE) == [6, 9, 3]
    # the target wants 5, 7, 8: the whole first branch, bonus from node3's row
    v = verify_tree_greedy(logits_for([5, 7, 0, 8, 2, 0]), HAND_TREE)
    assert v == TreeVerdict(path=(0, 2, 3), next_token=2)
    # the target wants 5 then 1, which no child of node0 offers
    assert verify_tree_greedy(logits_for([5, 1, 0, 0, 0, 0]), HAND_TREE) == TreeVerdict((0,), 1)
    # nothing matches at the root
    assert verify_tree_greedy(logits_for([4, 0, 0, 0, 0, 0]), HAND_TREE).num_accepted == 0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="n\\+1=6"):
        verify_tree_greedy(torch.zeros(5, 10), HAND_TREE)
    with pytest.raises(ValueError, match="n\\+1=6"):
        verify_tree_sampling(torch.full((3, 10), 0.1), HAND_TREE, None)
    with pytest.raises(ValueError, match="outside target_probs"):
        verify_tree_sampling(torch.full((6, 8), 0.125), HAND_TREE, None)


@pytest.mark.parametrize("deterministic", [False, True])
def test_sampling_on_a_chain_equals_verify_sampling_draw_for_draw(deterministic: bool) -> None:
    torch.manual_seed(3)
    vocab = 5
    rng = random.Random(3)
    for trial in range(120):
        k = rng.randint(0, 4)
        p = torch.softmax(torch.randn(k + 1, vocab) * 1.5, dim=-1)  # [k+1, vocab]
        q = None if deterministic else torch.softmax(torch.randn(k, vocab) * 1.5, dim=-1)  # [k, vocab]
        draft = [rng.randrange(vocab) for _ in range(k)]
        v = verify_sampling(p, q, draft, torch.Generator().manual_seed(trial))
        tv = verify_tree_sampling(p, DraftTree.chain(draft, q), torch.Generator().manual_seed(trial))
        assert (tv.num_accepted, tv.next_token) == (v.num_accepted, v.next_token)


VOCAB = 5
SIBLINGS = 3  # children of the root
GRANDCHILDREN = 2  # children of each root child


def _target() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target p0 [vocab] at the root, P1 [vocab, vocab] (row a: after first token a), P2 [vocab] deeper."""
    g = torch.Generator().manual_seed(11)
    p0 = torch.softmax(torch.randn(VOCAB, generator=g) * 1.5, dim=-1)
    p1 = torch.softmax(torch.randn(VOCAB, VOCAB, generator=g) * 1.5, dim=-1)
    p2 = torch.softmax(torch.randn(VOCAB, generator=g), dim=-1)
    return p0, p1, p2


def _proposals() -> torch.Tensor:
    """Proposal distributions [n, vocab], one per node of the two-level tree (all different)."""
    g = torch.Generator().manual_seed(12)
    n = SIBLINGS * (1 + GRANDCHILDREN)
    return torch.softmax(torch.randn(n, VOCAB, generator=g) * 1.5, dim=-1)


TWO_LEVEL_PARENTS = (-1,) * SIBLINGS + tuple(j for j in range(SIBLINGS) for _ in range(GRANDCHILDREN))
# deterministic candidates, with a repeated token among the root's children and among grandchildren
POINT_TREE = DraftTree(token_ids=(1, 3, 1, 2, 0, 2, 2, 4, 4), parents=TWO_LEVEL_PARENTS)


def _first_two_counts(deterministic: bool, draws: int, seed: int) -> list[int]:
    """Counts of the first two committed tokens (a, b) over `draws` tree verifications."""
    p0, p1, p2 = _target()
    q = _proposals()
    gen = torch.Generator().manual_seed(seed)
    counts = [0] * (VOCAB * VOCAB)
    for _ in range(draws):
        if deterministic:
            tree = POINT_TREE
        else:  # every node drawn from its own q, independently given its parent path
            tokens = torch.multinomial(q, 1, generator=gen)[:, 0].tolist()  # [n]
            tree = DraftTree(token_ids=tuple(tokens), parents=TWO_LEVEL_PARENTS, probs=q)
        rows = [p0, *(p1[tree.token_ids[j]] for j in range(SIBLINGS))]
        rows += [p2] * (tree.n - SIBLINGS)
        committed = verify_tree_sampling(torch.stack(rows), tree, gen).committed(tree)  # rows: [n+1, vocab]
        if len(committed) < 2:  # rejected at the root: the next token comes from P1[first]
            committed.append(int(torch.multinomial(p1[committed[0]], 1, generator=gen)))
        counts[committed[0] * VOCAB + committed[1]] += 1
    return counts


def _expected_first_two() -> list[float]:
    p0, p1, _ = _target()
    return [float(p0[a] * p1[a, b]) for a, b in itertools.product(range(VOCAB), range(VOCAB))]


@pytest.mark.parametrize("deterministic", [False, True])
def test_tree_sampling_matches_target_distribution(deterministic: bool) -> None:
    counts = _first_two_counts(deterministic, draws=8000, seed=7)
    expected = _expected_first_two()
    assert chi_square_pvalue(counts, expected) > 1e-3
    first = [sum(counts[a * VOCAB : (a + 1) * VOCAB]) for a in range(VOCAB)]
    p0 = [sum(expected[a * VOCAB : (a + 1) * VOCAB]) for a in range(VOCAB)]
    assert chi_square_pvalue(first, p0) > 1e-3


@pytest.mark.parametrize("deterministic", [False, True])
def test_skipping_the_residual_between_siblings_is_detected(
    deterministic: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the bug: a rejected sibling's q is not subtracted from p before trying the next one
    monkeypatch.setattr(tree_mod, "_residual", lambda p, q: p)
    counts = _first_two_counts(deterministic, draws=8000, seed=7)
    assert chi_square_pvalue(counts, _expected_first_two()) < 1e-6


def test_point_mass_children_accept_with_target_probability() -> None:
    # one deterministic child x: accepted with probability p(x); on rejection x is never the recovered token
    p = torch.tensor([[0.1, 0.6, 0.3], [1.0, 0.0, 0.0]])  # [n+1, vocab]
    tree = DraftTree.chain([1])
    gen = torch.Generator().manual_seed(0)
    verdicts = [verify_tree_sampling(p, tree, gen) for _ in range(4000)]
    accepted = sum(v.num_accepted for v in verdicts)
    assert abs(accepted / 4000 - 0.6) < 0.03
    assert all(v.next_token != 1 for v in verdicts if v.num_accepted == 0)
