"""The suffix proposer learns continuations online, within bounded memory."""

from __future__ import annotations

import pytest
import torch

from adaspec.runtime.proposers.base import RequestInfo
from adaspec.runtime.proposers.suffix import NGramIndex, SuffixProposer


def test_longest_match_wins_and_probabilities_are_smoothed() -> None:
    idx = NGramIndex(min_n=1, max_n=3, max_tokens=100)
    idx.add([1, 2, 3, 9, 2, 3, 4, 7, 2, 3, 4])
    m = idx.lookup([7, 2, 3])
    assert m is not None and m.length == 3 and m.token == 4
    m = idx.lookup([5, 2, 3])  # only the 2-gram (2, 3) matches: seen before 9 once and 4 twice
    assert m is not None and m.length == 2 and m.token == 4
    assert m.prob == pytest.approx(2 / 4)
    assert idx.lookup([8]) is None


def test_memory_is_bounded_by_evicting_oldest_documents() -> None:
    idx = NGramIndex(min_n=2, max_n=4, max_tokens=50)
    for d in range(20):
        idx.add([d * 100 + i for i in range(20)])
    assert idx.size <= 50
    assert idx.lookup([0, 1]) is None  # the first documents are gone
    assert idx.lookup([1900, 1901]) is not None
    # the table shrinks with evictions: only n-grams of the kept documents remain
    assert idx.num_keys <= 50 * 3


def test_proposer_learns_across_requests_and_per_tag() -> None:
    prop = SuffixProposer(min_n=2, max_n=6)
    phrase = [5, 6, 7, 8, 9, 10, 11, 12]
    logits = torch.zeros(1, 16)
    prop.begin(RequestInfo(prompt_ids=(1, 2, 3), tag="go"))
    assert prop.propose([1, 2, 3, 5, 6], 4, None).k == 0  # nothing learned yet
    prop.end(phrase)
    prop.begin(RequestInfo(prompt_ids=(4, 4, 5, 6), tag="go"))
    d = prop.propose([4, 4, 5, 6], 4, None)
    assert d.token_ids == (7, 8, 9, 10)
    assert d.match_length >= 2 and all(0 < c <= 1 for c in d.confidence)
    prop.begin(RequestInfo(prompt_ids=(4, 4, 5, 6), tag="python"))
    assert prop.propose([4, 4, 5, 6], 4, None).k == 0  # other tag: separate index
    # the request's own output is indexed as it is generated
    prop.observe([4, 4, 5, 6, 30, 31, 32, 5, 6, 30], 6, logits)
    assert prop.propose([4, 4, 5, 6, 30, 31, 32, 5, 6, 30], 2, None).token_ids == (31, 32)


def test_stop_callback_ends_drafting() -> None:
    prop = SuffixProposer(min_n=1, max_n=2)
    prop.begin(RequestInfo(prompt_ids=(1, 2, 3, 4, 5, 1, 2)))
    d = prop.propose([1, 2, 3, 4, 5, 1, 2], 8, lambda pos, conf: pos >= 1)
    assert d.token_ids == (3, 4)
