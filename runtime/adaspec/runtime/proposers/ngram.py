"""Prompt-lookup n-gram proposer (vLLM's `ngram` method; Saxena, "Prompt Lookup Decoding", 2023)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting

EMPTY = Draft(token_ids=(), probs=None, confidence=())


class NgramProposer:
    """Match the last n tokens (n = prompt_lookup_max down to prompt_lookup_min) earlier in prompt + output.

    On the most recent earlier occurrence of that n-gram, propose the tokens that followed it. Model
    free and stateless across requests: it only sees the current request's context, like vLLM's
    `ngram` speculator (`prompt_lookup_max`, `prompt_lookup_min`, `num_speculative_tokens`).
    """

    name = "ngram"

    def __init__(self, max_tokens: int, prompt_lookup_max: int = 4, prompt_lookup_min: int = 2) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens!r}")
        if not 1 <= prompt_lookup_min <= prompt_lookup_max:
            raise ValueError(
                "need 1 <= prompt_lookup_min <= prompt_lookup_max, "
                f"got {prompt_lookup_min!r}, {prompt_lookup_max!r}"
            )
        self.max_tokens = max_tokens
        self.prompt_lookup_max = prompt_lookup_max
        self.prompt_lookup_min = prompt_lookup_min

    def begin(self, request: RequestInfo) -> None:
        """Nothing to prepare: every lookup scans the context it is given."""
        del request

    def find(self, context: Sequence[int], max_tokens: int) -> tuple[tuple[int, ...], int]:
        """Return (continuation of the most recent earlier match, matched n); ((), 0) when none."""
        length = len(context)
        for n in range(min(self.prompt_lookup_max, length - 1), self.prompt_lookup_min - 1, -1):
            suffix = list(context[length - n :])
            # Scan start positions from the most recent backwards; the suffix itself is excluded.
            for start in range(length - n - 1, -1, -1):
                if context[start] == suffix[0] and list(context[start : start + n]) == suffix:
                    follow = tuple(context[start + n : start + n + max_tokens])
                    if follow:
                        return follow, n
        return (), 0

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Draft up to min(max_tokens, self.max_tokens) tokens by prompt lookup (empty when no match)."""
        limit = min(max_tokens, self.max_tokens)
        if limit <= 0:
            return EMPTY
        tokens, n = self.find(context, limit)
        if not tokens:
            return EMPTY
        # A heuristic the controller may bucket by: longer matches are more often right.
        conf = n / (n + 1.0)
        kept: list[int] = []
        for i, tok in enumerate(tokens):
            kept.append(tok)
            if stop is not None and stop(i, conf):
                break
        return Draft(token_ids=tuple(kept), probs=None, confidence=(conf,) * len(kept), match_length=n)

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Nothing to learn: the next lookup sees the committed tokens in its context."""
        del context, num_new, target_logits

    def end(self, output_ids: Sequence[int]) -> None:
        """Nothing kept across requests."""
        del output_ids


def build(vocab_size: int, max_tokens: int) -> NgramProposer:
    """Return the n-gram proposer (vocab_size is unused: drafts are copied context tokens)."""
    del vocab_size
    return NgramProposer(max_tokens)
