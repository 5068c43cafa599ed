"""`static`: a frozen draft model that drafts autoregressively with its own KV cache."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from adaspec.runtime.models import CachedLM
from adaspec.runtime.proposers.base import SYNC_SPLIT, Draft, RequestInfo, StopDrafting
from adaspec.runtime.sampling import SamplingParams, gumbel_scores, logits_to_probs, sample


class DraftModelProposer:
    """Drafts with a small causal LM sharing the target's tokenizer.

    Greedy requests draft the argmax (a point mass, so `probs` is None); sampled requests draw each
    token from the draft's distribution after the target's own transform and return it as `probs`.
    The confidence of a token is the draft's plain softmax probability of it (EAGLE-2, arXiv
    2406.16858, shows this tracks acceptance).
    """

    def __init__(self, lm: CachedLM, name: str = "static") -> None:
        self.name = name
        self.lm = lm
        self._sampling = SamplingParams()
        self._generator: torch.Generator | None = None

    def begin(self, request: RequestInfo) -> None:
        """Reset the draft cache for a new request."""
        self.lm.reset()
        self._sampling = request.sampling
        self._generator = request.generator

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Draft up to max_tokens tokens, asking `stop` after each one."""
        if max_tokens <= 0:
            return Draft(token_ids=(), probs=None, confidence=())
        pending = self.lm.sync(context)
        synced = 0.0
        if len(pending) > SYNC_SPLIT:  # a long catch-up (the prompt): not a cost of the drafted tokens
            t0 = time.perf_counter()
            self.lm.feed(pending[:-1], last=1)
            synced, pending = time.perf_counter() - t0, pending[-1:]
        logits = self.lm.feed(pending, last=1)[-1]  # [vocab]
        tokens: list[int] = []
        confs: list[float] = []
        rows: list[torch.Tensor] = []
        greedy = self._sampling.greedy
        for i in range(max_tokens):
            plain = torch.softmax(logits.float(), dim=-1)  # [vocab]
            if greedy:
                token = int(plain.argmax())
            elif self._sampling.reproducible and self._sampling.seed is not None:
                # the same noise the target's sample at this position uses: a coupled draft agrees with it
                # as often as the draft's distribution is close to the target's
                q = logits_to_probs(logits[None, :], self._sampling)  # [1, vocab]
                token = int(gumbel_scores(q, self._sampling.seed, len(context) + i)[0].argmax())
                rows.append(q[0])
            else:
                q = logits_to_probs(logits[None, :], self._sampling)[0]  # [vocab]
                token = sample(q, self._generator)
                rows.append(q)
            tokens.append(token)
            confs.append(float(plain[token]))
            if i + 1 == max_tokens or (stop is not None and stop(i, confs[-1])):
                break
            logits = self.lm.feed([token])[-1]
        probs = None if greedy else torch.stack(rows)  # [k, vocab]
        return Draft(token_ids=tuple(tokens), probs=probs, confidence=tuple(confs), sync_seconds=synced)

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Nothing to learn: the static draft is frozen (its cache re-syncs on the next propose)."""

    def end(self, output_ids: Sequence[int]) -> None:
        """Nothing to learn."""
