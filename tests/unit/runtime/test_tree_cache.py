"""A real Llama scores a draft tree in one pass as it scores each path alone, and keeps an exact cache."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from adaspec.runtime.models import TREE_SLOT, CachedLM, small_llama
from adaspec.runtime.tree import DraftTree, verify_tree_greedy

VOCAB = 64
ATOL = 1e-4


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The small Llama under each attention kernel that takes a 4D mask."""
    m = small_llama(vocab_size=VOCAB, hidden=32, layers=2, heads=4, kv_heads=2, max_positions=256, seed=5)
    m.set_attn_implementation(request.param)
    # One thread: a model this small is 30x slower when its threads contend for a busy machine's cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield m
    torch.set_num_threads(threads)


def random_tree(rng: random.Random) -> DraftTree:
    """A random tree of 1..16 nodes over a small token range (so siblings sometimes repeat a token)."""
    n = rng.randint(1, 16)
    parents = tuple(rng.randint(-1, i - 1) for i in range(n))
    return DraftTree(token_ids=tuple(rng.randrange(8) for _ in range(n)), parents=parents)


def chain_logits(model: Any, ids: list[int]) -> torch.Tensor:
    """Logits [len(ids), vocab] of feeding `ids` to a fresh cache in one causal pass."""
    return CachedLM(model).feed(ids)


def test_tree_logits_and_kept_cache_equal_chain_feeding(model: Any) -> None:
    rng = random.Random(0)
    for trial in range(24):
        tree = random_tree(rng)
        context = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 20))]
        lm = CachedLM(model)
        if len(context) > 1:
            lm.feed(context[:-1])  # the past; context[-1] is the pending token (the past may be empty)
        logits = lm.feed_tree(context[-1], tree)  # [n+1, vocab]
        assert logits.shape == (tree.n + 1, VOCAB)
        assert lm.cached_ids == [*context, *([TREE_SLOT] * tree.n)]
        root_ref = chain_logits(model, context)[-1]
        torch.testing.assert_close(logits[0], root_ref, atol=ATOL, rtol=0)
        for i in range(tree.n):
            path_ids = [tree.token_ids[j] for j in tree.path(i)]
            ref = chain_logits(model, context + path_ids)[-1]  # [vocab]
            torch.testing.assert_close(logits[i + 1], ref, atol=ATOL, rtol=0, msg=f"trial {trial} node {i}")

        keep = () if trial % 5 == 0 else tree.path(rng.randrange(tree.n))
        lm.keep_path(keep)
        kept_ids = [*context, *(tree.token_ids[i] for i in keep)]
        assert lm.cached_ids == kept_ids
        ref_lm = CachedLM(model)
        ref_lm.feed(kept_ids)
        for got, want in zip(lm.cache.layers, ref_lm.cache.layers, strict=True):
            assert isinstance(got, DynamicLayer) and isinstance(want, DynamicLayer)
            torch.testing.assert_close(got.keys, want.keys, atol=ATOL, rtol=0)
            torch.testing.assert_close(got.values, want.values, atol=ATOL, rtol=0)
        more = [rng.randrange(VOCAB) for _ in range(3)]
        torch.testing.assert_close(lm.feed(more), ref_lm.feed(more), atol=ATOL, rtol=0)


def test_tree_steps_decode_the_target_greedy_sequence(model: Any) -> None:
    # Several tree steps in a row (keep_path, then the next tree after it) give the target's own argmax.
    rng = random.Random(1)
    context = [3, 17, 42, 5]
    steps = 6
    ref = CachedLM(model)
    want = list(context)
    for _ in range(steps * 4):
        want.append(int(ref.feed(ref.sync(want))[-1].argmax()))
    lm = CachedLM(model)
    lm.feed(context[:-1])
    out = list(context)
    pending = context[-1]
    accepted = 0
    for _ in range(steps):
        # one branch follows the target for a while, the others are noise
        good = want[len(out) : len(out) + rng.randint(0, 3)]
        tree = DraftTree.from_branches(
            [[rng.randrange(VOCAB)], good, [rng.randrange(VOCAB) for _ in range(2)]]
        )
        verdict = verify_tree_greedy(lm.feed_tree(pending, tree), tree)
        lm.keep_path(verdict.path)
        committed = verdict.committed(tree)
        assert committed == want[len(out) : len(out) + len(committed)]
        out.extend(committed)
        accepted += verdict.num_accepted
        pending = committed[-1]
    assert out == want[: len(out)]
    assert accepted >= steps  # the good branch was taken, not only the target's own token


def test_sync_after_feed_tree_drops_the_whole_tree(model: Any) -> None:
    lm = CachedLM(model)
    lm.feed([1, 2, 3])
    tree = DraftTree.from_branches([[4, 5], [6]])
    lm.feed_tree(9, tree)
    assert lm.sync([1, 2, 3, 9, 4, 5, 7]) == [4, 5, 7]  # the tree's slots never match a context
    assert lm.cached_ids == [1, 2, 3, 9]
    with pytest.raises(ValueError, match="keep_path needs a tree"):
        lm.keep_path(())


def test_keep_path_misuse_is_an_error(model: Any) -> None:
    lm = CachedLM(model)
    with pytest.raises(ValueError, match="keep_path needs a tree"):
        lm.keep_path(())
    tree = DraftTree.from_branches([[4, 5], [6]])
    lm.feed_tree(9, tree)
    with pytest.raises(ValueError, match="feed_tree called again"):
        lm.feed_tree(9, tree)
    with pytest.raises(ValueError, match="not a child"):
        lm.keep_path((0, 2))
    lm.keep_path((2,))
    assert lm.cached_ids == [9, 6]
    with pytest.raises(ValueError, match="keep_path needs a tree"):
        lm.keep_path((2,))


def test_tree_beyond_max_positions_is_an_error(model: Any) -> None:
    lm = CachedLM(model)
    past = [i % VOCAB for i in range(250)]
    lm.feed(past)
    with pytest.raises(ValueError, match="max_positions"):
        lm.feed_tree(1, DraftTree.chain([1] * 6))  # positions 250..256, the model has 256
    assert lm.cached_ids == past
    lm.feed_tree(1, DraftTree.chain([1] * 5))  # the last position is 255
