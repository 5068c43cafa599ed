"""SuffixDecoding through Snowflake's `arctic-inference` package (arXiv 2411.04975), as a peer baseline."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import torch

from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting

PACKAGE = "arctic-inference"


class MissingPackageError(ImportError):
    """An optional package a proposer needs is not installed; the message names it."""


def load_suffix_cache_class() -> Any:
    """Return arctic_inference's SuffixDecodingCache class; MissingPackageError names the package."""
    try:
        module = importlib.import_module("arctic_inference.suffix_decoding")
    except ImportError as exc:
        raise MissingPackageError(
            f"strategy 'arctic-suffix' needs the PyPI package {PACKAGE!r} "
            f"(install the bench extra: `make venv` or `pip install {PACKAGE}`): {exc}"
        ) from exc
    return module.SuffixDecodingCache


class ArcticSuffixProposer:
    """A per-request prompt tree plus one global tree of previous outputs, both kept by arctic-inference.

    Mirrors how vLLM drives it (`method="suffix"`): start_request with the prompt, add every committed
    token as an active response, speculate on the last `max_tree_depth` tokens, stop_request at the
    end. The global tree keeps responses across requests (FIFO-evicted beyond `max_cached_requests`),
    which is what makes it adaptive. Parameters are vLLM's `suffix_decoding_*` defaults.
    """

    name = "arctic-suffix"

    def __init__(
        self,
        max_tokens: int,
        max_tree_depth: int = 24,
        max_cached_requests: int = 10000,
        max_spec_factor: float = 1.0,
        min_token_prob: float = 0.1,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.max_tree_depth = max_tree_depth
        self.max_spec_factor = max_spec_factor
        self.min_token_prob = min_token_prob
        cache_class = load_suffix_cache_class()
        self.cache = cache_class(max_tree_depth=max_tree_depth, max_cached_requests=max_cached_requests)
        self._next_id = 0
        self._active: int | None = None
        self._added = 0  # response tokens already given to the cache for the active request

    def begin(self, request: RequestInfo) -> None:
        """Start a request: index its prompt (closing any request left open by an earlier failure)."""
        if self._active is not None:
            self.cache.stop_request(self._active)
        self._active = self._next_id
        self._next_id += 1
        self._added = 0
        self.cache.start_request(self._active, list(request.prompt_ids))

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Speculate the most likely continuation path; confidence is the cache's per-token estimate."""
        limit = min(max_tokens, self.max_tokens)
        if self._active is None or limit <= 0:
            return Draft(token_ids=(), probs=None, confidence=())
        draft = self.cache.speculate(
            self._active,
            list(context[-self.max_tree_depth :]),
            max_spec_tokens=limit,  # always passed: the default path raises AttributeError in 0.3.0
            max_spec_factor=self.max_spec_factor,
            min_token_prob=self.min_token_prob,
        )
        tokens = [int(t) for t in draft.token_ids][:limit]
        confidence = [min(1.0, max(0.0, float(p))) for p in draft.probs][: len(tokens)]
        kept = 0
        for i, conf in enumerate(confidence):
            kept = i + 1
            if stop is not None and stop(i, conf):
                break
        return Draft(
            token_ids=tuple(tokens[:kept]),
            probs=None,
            confidence=tuple(confidence[:kept]),
            match_length=int(draft.match_len),
        )

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Append the newly committed tokens to the request's response in the cache."""
        del target_logits
        if self._active is None or num_new <= 0:
            return
        self.cache.add_active_response(self._active, [int(t) for t in context[-num_new:]])
        self._added += num_new

    def end(self, output_ids: Sequence[int]) -> None:
        """Add any output not yet observed, then close the request (its response stays cached)."""
        if self._active is None:
            return
        rest = [int(t) for t in output_ids[self._added :]]
        if rest:
            self.cache.add_active_response(self._active, rest)
        self.cache.stop_request(self._active)
        self._active = None
        self._added = 0


def build(vocab_size: int, max_tokens: int) -> ArcticSuffixProposer:
    """Return the arctic-inference SuffixDecoding proposer; raises MissingPackageError without the package."""
    del vocab_size
    return ArcticSuffixProposer(max_tokens)
