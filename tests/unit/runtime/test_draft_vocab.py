"""A model draft's reduced vocabulary (FR-Spec): its ranking, its file, its drafts, its online re-ranking."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from adaspec.runtime.artifacts import read_manifest
from adaspec.runtime.calibrate import proposer_step_seconds
from adaspec.runtime.models import CachedLM, small_llama
from adaspec.runtime.proposers.adaptive import AdaptiveConfig, AdaptiveProposer
from adaspec.runtime.proposers.base import RequestInfo
from adaspec.runtime.proposers.static import DraftModelProposer
from adaspec.runtime.proposers.vocab import (
    VOCAB_FILE,
    TokenCounts,
    check_counts,
    draft_counts,
    pick,
    read_counts,
    reduced_size,
    save_counts,
    vocab_map,
)
from adaspec.runtime.sampling import SamplingParams, gumbel_scores

VOCAB, SIZE = 64, 16
PROMPT = [(5 * i + 2) % 40 for i in range(30)]


def _counts(favoured: range) -> torch.Tensor:
    """Counts that rank `favoured` ids first: [VOCAB] float64."""
    counts = torch.ones(VOCAB, dtype=torch.float64)
    counts[list(favoured)] = 10.0
    return counts


def _draft(seed: int = 3) -> Any:
    return small_llama(VOCAB, hidden=32, layers=2, seed=seed)


def test_the_reduced_size_is_a_quarter_of_the_vocabulary_at_most_8192() -> None:
    assert (reduced_size(49152), reduced_size(1024), reduced_size(128_256), reduced_size(2)) == (
        8192,
        256,
        8192,
        1,
    )


def test_a_ranking_takes_the_most_counted_ids_and_bad_counts_are_refused() -> None:
    table = TokenCounts.ranked(_counts(range(20, 36)), SIZE)
    assert table.reduced and table.ids.tolist() == list(range(20, 36))
    assert not TokenCounts.ranked(_counts(range(0, 4)), VOCAB).reduced  # the whole vocabulary fits
    for bad, why in (
        (torch.ones(VOCAB + 1), "shape"),
        (torch.full((VOCAB,), -1.0), ">= 0"),
        (torch.full((VOCAB,), float("nan")), "finite"),
        (torch.zeros(VOCAB), "all zero"),
    ):
        with pytest.raises(ValueError, match=why):
            check_counts(bad, VOCAB, "draft 'x'")


def test_counts_round_trip_and_a_checksummed_directory_guards_them(tmp_path: Path) -> None:
    counts = _counts(range(8, 24))
    save_counts(tmp_path, counts)
    assert torch.equal(read_counts(tmp_path, VOCAB), counts)  # type: ignore[arg-type]
    assert draft_counts(tmp_path, VOCAB) is not None  # a plain model directory: read as it is
    with pytest.raises(ValueError, match=r"expected \(65,\)"):
        read_counts(tmp_path, VOCAB + 1)
    assert draft_counts(tmp_path / "absent", VOCAB) is None
    # a directory with a manifest: only a listed file with its digest is read
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {"config.json": "0" * 64}}))
    assert draft_counts(tmp_path, VOCAB) is None
    (tmp_path / "manifest.json").write_text(json.dumps({"files": {VOCAB_FILE: "0" * 64}}))
    with pytest.raises(ValueError, match="does not match its manifest"):
        draft_counts(tmp_path, VOCAB)
    (tmp_path / VOCAB_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        read_counts(tmp_path, VOCAB)


def test_pick_maps_reduced_slots_to_target_ids_and_keeps_q_on_the_drafted_ids() -> None:
    vocab = vocab_map(torch.tensor([3, 9, 40, 41]), torch.randn(VOCAB, 8), "cpu")
    logits = torch.tensor([0.1, 2.0, 0.3, -1.0])
    token, conf, row = pick(logits, vocab, VOCAB, SamplingParams(), None, 0)
    assert (token, row) == (9, None) and conf == pytest.approx(float(torch.softmax(logits, -1)[1]))
    sampling = SamplingParams(temperature=1.0, seed=7, reproducible=True)
    token, _, row = pick(logits, vocab, VOCAB, sampling, None, 5)
    assert row is not None and row.shape == (VOCAB,) and float(row.sum()) == pytest.approx(1.0)
    assert float(row[[i for i in range(VOCAB) if i not in (3, 9, 40, 41)]].abs().sum()) == 0.0
    assert token == int(gumbel_scores(row[None], 7, 5)[0].argmax())  # the target's noise at position 5
    gen = torch.Generator().manual_seed(0)
    drawn = {pick(logits, vocab, VOCAB, SamplingParams(temperature=1.0), gen, 0)[0] for _ in range(200)}
    assert drawn == {3, 9, 40, 41}


def test_a_ranked_draft_drafts_the_argmax_among_its_ids_only() -> None:
    """Greedy drafts equal the full model's, restricted to the ranked ids (reference: masked full logits)."""
    counts = _counts(range(20, 36))
    prop = DraftModelProposer(CachedLM(_draft()), counts=counts, vocab_size=SIZE)
    assert prop.vocab is not None and prop.vocab.ids.tolist() == list(range(20, 36))
    prop.begin(RequestInfo(prompt_ids=tuple(PROMPT)))
    draft = prop.propose(PROMPT, 5, None)
    ref = CachedLM(_draft())
    mask = torch.full((VOCAB,), float("-inf"))
    mask[20:36] = 0.0
    ctx, expected = list(PROMPT), []
    for _ in range(5):
        ref.reset()
        expected.append(int((ref.feed(ctx, last=1)[-1] + mask).argmax()))
        ctx.append(expected[-1])
    assert list(draft.token_ids) == expected
    assert all(0.0 < c <= 1.0 for c in draft.confidence) and draft.probs is None
    full = DraftModelProposer(CachedLM(_draft()))  # no counts: the whole head, as before
    assert full.vocab is None and full.counts is None


def test_a_head_that_is_not_a_plain_product_keeps_the_full_vocabulary(caplog: Any) -> None:
    model = _draft()
    model.lm_head = torch.nn.Linear(32, VOCAB, bias=True)  # a bias: rows of the weight alone mislead
    with caplog.at_level(logging.WARNING, logger="adaspec.draft"):
        prop = DraftModelProposer(CachedLM(model), counts=_counts(range(20, 36)), vocab_size=SIZE)
    assert prop.vocab is None and "event=draft_vocab_full" in caplog.text
    assert CachedLM(_draft()).head_is_plain()


def test_the_step_cost_is_measured_with_the_head_the_draft_runs() -> None:
    prop = DraftModelProposer(CachedLM(_draft()), counts=_counts(range(20, 36)), vocab_size=SIZE)
    seconds = proposer_step_seconds(prop)
    assert seconds is not None and seconds > 0.0
    assert proposer_step_seconds(object()) is None


def test_the_adaptive_draft_re_ranks_on_traffic_and_saves_its_counts(tmp_path: Path) -> None:
    counts = _counts(range(0, 16))
    prop = AdaptiveProposer(
        CachedLM(_draft()), AdaptiveConfig(), counts=counts
    )  # ranks reduced_size(64) = 16
    assert prop.counts is not None and prop.vocab is not None
    before = prop.vocab.ids.tolist()
    shifted = [40 + (i % 16) for i in range(400)]  # traffic over ids the offline counts never saw
    for _ in range(2):
        prop.begin(RequestInfo(prompt_ids=tuple(shifted)))
        prop.propose(shifted, 3, None)
        prop.end(shifted[:8])
    prop.begin(RequestInfo(prompt_ids=tuple(shifted)))  # the re-ranking happens between requests
    after = prop.vocab.ids.tolist()
    assert after != before and set(range(40, 56)) <= set(after)
    draft = prop.propose(shifted, 3, None)
    assert set(draft.token_ids) <= set(after)
    out = tmp_path / "rev"
    prop.save_revision(out, revision="r1", parent="static", target_model="t", tokenizer_sha256="f" * 64)
    assert VOCAB_FILE in read_manifest(out, "f" * 64).files  # checksummed with the weights
    saved = draft_counts(out, VOCAB)
    assert saved is not None and torch.equal(saved, prop.counts.counts)
    assert float(saved[40:56].sum()) > float(counts[40:56].sum())
    prop.close()
