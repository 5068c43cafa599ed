"""The arctic-inference SuffixDecoding peer: learns across requests, names its package when missing."""

from __future__ import annotations

import sys

import pytest
import torch

from adaspec.runtime.proposers.arctic import ArcticSuffixProposer, MissingPackageError, build
from adaspec.runtime.proposers.base import Proposer, RequestInfo

NO_LOGITS = torch.zeros(0, 8)  # [num_new, vocab]: unused by this proposer


def serve(p: ArcticSuffixProposer, prompt: list[int], output: list[int]) -> None:
    """Feed one request through the lifecycle, one committed token at a time."""
    p.begin(RequestInfo(prompt_ids=prompt))
    context = list(prompt)
    for tok in output:
        context.append(tok)
        p.observe(context, 1, NO_LOGITS)
    p.end(output)


def test_it_implements_the_protocol() -> None:
    proposer = build(vocab_size=100, max_tokens=4)
    assert isinstance(proposer, Proposer)
    assert proposer.name == "arctic-suffix"


def test_previous_outputs_are_proposed_for_a_new_request() -> None:
    p = ArcticSuffixProposer(max_tokens=4)
    output = [10, 11, 12, 13, 14, 15, 16, 17]
    serve(p, [1, 2, 3], output)
    p.begin(RequestInfo(prompt_ids=[4, 5, 10, 11, 12]))
    draft = p.propose([4, 5, 10, 11, 12], 4, None)
    assert draft.token_ids == (13, 14, 15)  # capped by max_spec_factor x match length (3)
    assert draft.probs is None and draft.match_length == 3
    assert all(0.0 <= c <= 1.0 for c in draft.confidence)
    assert p.propose([4, 5, 10, 11, 12], 2, None).k == 2
    p.end([])


def test_end_adds_unobserved_output_and_a_failed_request_is_closed() -> None:
    p = ArcticSuffixProposer(max_tokens=4)
    p.begin(RequestInfo(prompt_ids=[1, 2]))
    p.end([30, 31, 32, 33, 34, 35])  # nothing was observed: end still records the response
    p.begin(RequestInfo(prompt_ids=[9]))
    p.begin(RequestInfo(prompt_ids=[9]))  # the previous request never ended: it is closed, not leaked
    assert p.propose([9, 30, 31, 32], 4, None).token_ids[:1] == (33,)
    assert len(p.cache.active_requests) == 1


def test_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "arctic_inference.suffix_decoding", None)
    with pytest.raises(MissingPackageError, match="'arctic-inference'"):
        build(vocab_size=100, max_tokens=4)
