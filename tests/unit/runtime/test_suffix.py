"""The suffix proposer learns continuations online, within bounded memory."""

from __future__ import annotations

import pytest
import torch

from adaspec.runtime.proposers.base import RequestInfo
from adaspec.runtime.proposers.suffix import SuffixIndex, SuffixProposer


def _next(idx: SuffixIndex, context: list[int]) -> tuple[int, list[int]]:
    m = idx.match(context)
    assert m is not None
    return m.depth, sorted(int(t) for t in idx.tokens_at(m.positions))


def test_the_longest_match_names_the_candidates() -> None:
    idx = SuffixIndex(max_depth=8, max_tokens=100)
    idx.add([1, 2, 3, 9, 2, 3, 4, 7, 2, 3, 4])
    assert _next(idx, [7, 2, 3]) == (3, [4])  # only the occurrence after 7 matches three deep
    assert _next(idx, [5, 2, 3]) == (2, [4, 4, 9])  # two deep: all three occurrences of (2, 3)
    assert _next(idx, [8, 3]) == (1, [4, 4, 9])  # one deep: every token after a 3
    assert idx.match([8, 8]) is None


def test_matches_go_as_deep_as_max_depth_and_never_across_documents() -> None:
    long = list(range(100, 140))
    idx = SuffixIndex(max_depth=32, max_tokens=1000)
    idx.add([*long, 7])
    idx.add([*long[-5:], 8])  # a shorter copy in another document
    depth, tokens = _next(idx, long)
    assert (depth, tokens) == (32, [7])  # capped at max_depth, and only the deep occurrence
    assert _next(idx, [1, *long[-5:]]) == (5, [7, 8])  # the second document's match stops at its start


def test_memory_is_bounded_by_evicting_oldest_documents() -> None:
    idx = SuffixIndex(max_depth=4, max_tokens=50, max_per_key=3)
    for d in range(20):
        idx.add([d * 100 + i for i in range(20)])
    assert idx.size <= 50
    assert idx.match([0, 1]) is None  # the first documents are gone
    assert idx.match([1900, 1901]) is not None
    assert idx.num_keys <= 2 * 50  # tokens and pairs of the kept documents only
    for _ in range(10):
        idx.add([5, 6, 7])
    m = idx.match([5, 6])
    assert m is not None and len(m.positions) == 3  # positions per pair are capped, newest kept


def test_proposer_learns_across_requests_and_per_tag() -> None:
    prop = SuffixProposer(max_depth=6)
    phrase = [5, 6, 7, 8, 9, 10, 11, 12]
    logits = torch.zeros(1, 16)
    prop.begin(RequestInfo(prompt_ids=(1, 2, 3), tag="go"))
    assert prop.propose([1, 2, 3, 5, 6], 4, None).k == 0  # nothing learned yet
    prop.end(phrase)
    prop.begin(RequestInfo(prompt_ids=(4, 4, 5, 6), tag="go"))
    d = prop.propose([4, 4, 5, 6], 4, None)
    assert d.token_ids == (7, 8)  # at most as many tokens as the match is deep (max_spec_factor 1)
    assert d.match_length == 2 and d.confidence == (1.0, 1.0)
    assert prop.propose([9, 8, 5, 6, 7, 8], 4, None).token_ids == (9, 10, 11, 12)
    prop.begin(RequestInfo(prompt_ids=(4, 4, 5, 6), tag="python"))
    assert prop.propose([4, 4, 5, 6], 4, None).k == 0  # other tag: separate index
    # the request's own output is indexed as it is generated
    prop.observe([4, 4, 5, 6, 30, 31, 32, 5, 6, 30], 6, logits)
    assert prop.propose([4, 4, 5, 6, 30, 31, 32, 5, 6, 30], 2, None).token_ids == (31, 32)


def test_frequencies_score_the_paths_and_the_best_path_wins() -> None:
    prop = SuffixProposer(max_depth=8, min_token_prob=0.3)
    for tail in ([1, 2], [1, 2], [1, 3], [4]):  # after (8, 9): 1 three times (then 2, 2, 3), 4 once
        prop.begin(RequestInfo(prompt_ids=(7, 8), tag="t"))
        prop.end([9, *tail])
    prop.begin(RequestInfo(prompt_ids=(7, 8, 9), tag="t"))
    d = prop.propose([7, 8, 9], 4, None)
    assert d.token_ids == (1, 2)  # 3 of 4 then 2 of 3: cumulative 0.75, 0.5 (3 is not followed)
    assert d.confidence == pytest.approx((0.75, 2 / 3))
    assert d.match_length == 3
    # the request's own context matches deeper (3, 4, 5, 6 -> 9): its path is as sure and longer, it wins
    prop = SuffixProposer(max_depth=8)
    for _ in range(4):
        prop.begin(RequestInfo(prompt_ids=(0,), tag="t"))
        prop.end([5, 6, 1, 2, 3, 4])
    prop.begin(RequestInfo(prompt_ids=(3, 4, 5, 6, 9, 3, 4, 5, 6), tag="t"))
    d = prop.propose([3, 4, 5, 6, 9, 3, 4, 5, 6], 4, None)
    assert d.token_ids == (9, 3, 4, 5) and d.match_length == 4
    # with the local document cut short, the shared index's two-deep path (1, 2) is the best there is
    prop.begin(RequestInfo(prompt_ids=(3, 4, 5, 6), tag="t"))
    assert prop.propose([3, 4, 5, 6], 4, None).token_ids == (1, 2)


def test_stop_callback_ends_drafting() -> None:
    prop = SuffixProposer(max_depth=2)
    prop.begin(RequestInfo(prompt_ids=(1, 2, 3, 4, 5, 1, 2)))
    d = prop.propose([1, 2, 3, 4, 5, 1, 2], 8, lambda pos, conf: pos >= 1)
    assert d.token_ids == (3, 4)


def test_a_loop_near_the_end_of_the_context_runs_on_through_the_drafted_tokens() -> None:
    prop = SuffixProposer(max_depth=8)
    loop = (1, 2, 3, 1, 2, 3, 1, 2)
    prop.begin(RequestInfo(prompt_ids=loop))
    d = prop.propose(list(loop), 6, None)
    # the deepest match (1, 2, 3, 1, 2 at the start) is followed by 3, 1, 2 and then the context's end:
    # the walk reads its own drafted 3, 1 there, up to the match's depth of 5
    assert d.token_ids == (3, 1, 2, 3, 1) and d.match_length == 5
