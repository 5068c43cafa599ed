"""Prompt-lookup n-gram proposer: longest n first, most recent match, caps and early stop."""

from __future__ import annotations

import pytest

from adaspec.runtime.proposers.base import Proposer, RequestInfo
from adaspec.runtime.proposers.ngram import NgramProposer, build


def test_it_implements_the_protocol() -> None:
    proposer = build(vocab_size=100, max_tokens=4)
    assert isinstance(proposer, Proposer)
    assert proposer.name == "ngram"


def test_proposes_what_followed_the_most_recent_match() -> None:
    p = NgramProposer(max_tokens=3)
    p.begin(RequestInfo(prompt_ids=[1, 2, 3]))
    context = [5, 6, 7, 1, 5, 6, 8, 9, 4, 4, 5, 6]
    draft = p.propose(context, 8, None)
    assert draft.token_ids == (8, 9, 4)  # "5 6" matched twice; the later one wins
    assert draft.probs is None and draft.match_length == 2
    assert len(draft.confidence) == draft.k


def test_longer_ngrams_win_over_more_recent_short_ones() -> None:
    p = NgramProposer(max_tokens=2, prompt_lookup_max=3, prompt_lookup_min=1)
    context = [1, 2, 3, 10, 11, 9, 3, 20, 21, 1, 2, 3]
    assert p.propose(context, 2, None).token_ids == (10, 11)  # trigram "1 2 3", not the unigram "3"
    assert p.propose(context, 2, None).match_length == 3


def test_no_match_gives_an_empty_draft() -> None:
    p = NgramProposer(max_tokens=4)
    assert p.propose([1, 2, 3, 4, 5], 4, None).k == 0
    assert p.propose([7], 4, None).k == 0
    assert p.propose([1, 2, 1, 2], 0, None).k == 0


def test_caps_and_early_stop() -> None:
    p = NgramProposer(max_tokens=2)
    context = [1, 2, 3, 4, 5, 6, 1, 2]
    assert p.propose(context, 10, None).token_ids == (3, 4)  # the proposer's own cap
    seen: list[int] = []

    def stop(position: int, confidence: float) -> bool:
        seen.append(position)
        return position == 0

    assert p.propose(context, 10, stop).token_ids == (3,)
    assert seen == [0]


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="max_tokens must be > 0, got 0"):
        NgramProposer(max_tokens=0)
    with pytest.raises(ValueError, match="prompt_lookup_min"):
        NgramProposer(max_tokens=4, prompt_lookup_max=2, prompt_lookup_min=3)
