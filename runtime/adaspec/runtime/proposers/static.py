"""`static`: a frozen draft model that drafts autoregressively with its own KV cache."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from adaspec.runtime.models import CachedLM
from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting, catch_up_tokens
from adaspec.runtime.proposers.vocab import TokenCounts, VocabMap, check_counts, pick, reduced_size, vocab_map
from adaspec.runtime.sampling import SamplingParams

log = logging.getLogger("adaspec.draft")


class DraftModelProposer:
    """Drafts with a small causal LM sharing the target's tokenizer.

    Greedy requests draft the argmax (a point mass, so `probs` is None); sampled requests draw each
    token from the draft's distribution after the target's own transform and return it as `probs`.
    The confidence of a token is the draft's plain softmax probability of it (EAGLE-2, arXiv
    2406.16858, shows this tracks acceptance).

    Given token counts [vocab] (a draft directory's `vocab.safetensors`), it drafts over the `vocab_size`
    (default `reduced_size`) most counted ids only, scoring them with those rows of its output layer
    (FR-Spec, see `vocab`); without counts, or when the model's head is not a plain product
    (`CachedLM.head_is_plain`), over the whole vocabulary.
    """

    def __init__(
        self,
        lm: CachedLM,
        name: str = "static",
        counts: torch.Tensor | None = None,
        vocab_size: int | None = None,
    ) -> None:
        self.name = name
        self.lm = lm
        self._sampling = SamplingParams()
        self._generator: torch.Generator | None = None
        self.counts: TokenCounts | None = None
        if counts is not None:
            size = vocab_size if vocab_size is not None else reduced_size(lm.vocab_size)
            table = TokenCounts.ranked(check_counts(counts, lm.vocab_size, f"draft {name!r}"), size)
            if table.reduced and lm.head_is_plain():  # (a vocabulary that fits is drafted whole)
                self.counts = table
            elif table.reduced:
                log.warning("event=draft_vocab_full name=%s msg='output layer is not a plain product'", name)
        self.vocab = self._vocab_map()

    def _vocab_map(self) -> VocabMap | None:
        """The reduced vocabulary of the current ranking and weights (None: the full head)."""
        if self.counts is None:
            return None
        return vocab_map(self.counts.ids, self.lm.head_weight, self.lm.device)

    def begin(self, request: RequestInfo) -> None:
        """Reset the draft cache for a new request."""
        self.lm.reset()
        self._sampling = request.sampling
        self._generator = request.generator

    def _logits(self, ids: list[int]) -> torch.Tensor:
        """Feed `ids`; the next-token logits over the drafted vocabulary: [Vd] or [vocab]."""
        if self.vocab is None:
            return self.lm.feed(ids, last=1)[-1]
        return self.lm.feed_hidden(ids, last=1)[-1] @ self.vocab.head.T

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Draft up to max_tokens tokens, asking `stop` after each one."""
        if max_tokens <= 0:
            return Draft(token_ids=(), probs=None, confidence=())
        pending = self.lm.sync(context)
        synced, behind = 0.0, catch_up_tokens(len(pending))
        if behind:  # a long catch-up (the prompt): not a cost of the drafted tokens
            t0 = time.perf_counter()
            self.lm.feed_hidden(pending[:-1], last=1)  # the layers only: no logits are needed
            synced, pending = time.perf_counter() - t0, pending[-1:]
        logits = self._logits(pending)
        tokens: list[int] = []
        confs: list[float] = []
        rows: list[torch.Tensor] = []
        full = self.lm.vocab_size
        for i in range(max_tokens):
            token, conf, row = pick(
                logits, self.vocab, full, self._sampling, self._generator, len(context) + i
            )
            tokens.append(token)
            confs.append(conf)
            if row is not None:
                rows.append(row)
            if i + 1 == max_tokens or (stop is not None and stop(i, confs[-1])):
                break
            logits = self._logits([token])
        probs = torch.stack(rows) if rows else None  # [k, vocab]
        confidence = tuple(confs)
        return Draft(tuple(tokens), probs, confidence, sync_seconds=synced, sync_tokens=behind)

    def behind(self, context: Sequence[int]) -> int:
        """Tokens the next `propose(context)` would feed in a catch-up pass before drafting."""
        return catch_up_tokens(len(context) - self.lm.kept(context))

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Nothing to learn: the static draft is frozen (its cache re-syncs on the next propose)."""

    def end(self, output_ids: Sequence[int]) -> None:
        """Nothing to learn."""
