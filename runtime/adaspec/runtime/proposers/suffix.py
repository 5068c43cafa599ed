"""`suffix`: model-free adaptive speculation from n-gram continuations of recent traffic.

In the spirit of SuffixDecoding (Oliaro et al., arXiv 2411.04975): one index over the current
request (prompt plus output so far) and one over previous requests, updated online after every
request, with frequency-based probabilities and bounded memory. Instead of a suffix tree we keep
n-gram tables (n = min_n..max_n) of next-token counts; the longest matching suffix of the context
wins, which is what a suffix tree walk finds.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting


@dataclass(frozen=True)
class Match:
    """The continuation an index predicts for a context."""

    length: int  # n-gram length matched
    token: int
    prob: float  # smoothed frequency of `token` after that n-gram


class NGramIndex:
    """Next-token counts for every n-gram (min_n <= n <= max_n) in a bounded window of documents."""

    def __init__(self, min_n: int = 2, max_n: int = 8, max_tokens: int = 65536) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got min_n={min_n}, max_n={max_n}")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.min_n, self.max_n, self.max_tokens = min_n, max_n, max_tokens
        self._table: dict[tuple[int, ...], dict[int, int]] = {}
        self._docs: deque[list[int]] = deque()
        self.size = 0  # tokens held

    def _count(self, tokens: Sequence[int], j: int, delta: int) -> None:
        nxt = tokens[j]
        for n in range(self.min_n, self.max_n + 1):
            if j - n < 0:
                break
            key = tuple(tokens[j - n : j])
            row = self._table.setdefault(key, {})
            c = row.get(nxt, 0) + delta
            if c > 0:
                row[nxt] = c
            else:
                row.pop(nxt, None)
                if not row:
                    del self._table[key]

    def add(self, tokens: Sequence[int]) -> None:
        """Index a document (its last max_tokens tokens), evicting the oldest documents to stay bounded."""
        doc = list(tokens[-self.max_tokens :])
        for j in range(len(doc)):
            self._count(doc, j, +1)
        self._docs.append(doc)
        self.size += len(doc)
        while self.size > self.max_tokens:
            old = self._docs.popleft()
            for j in range(len(old)):
                self._count(old, j, -1)
            self.size -= len(old)

    def append(self, tokens: list[int], start: int) -> None:
        """Index positions start.. of a growing document `tokens` (a request's own context)."""
        for j in range(max(start, 1), len(tokens)):
            self._count(tokens, j, +1)
        self.size = len(tokens)

    def lookup(self, context: Sequence[int]) -> Match | None:
        """Return the continuation of the longest indexed suffix of `context`, or None."""
        for n in range(min(self.max_n, len(context)), self.min_n - 1, -1):
            row = self._table.get(tuple(context[-n:]))
            if row:
                token, count = max(row.items(), key=lambda kv: kv[1])
                return Match(length=n, token=token, prob=count / (sum(row.values()) + 1))
        return None

    @property
    def num_keys(self) -> int:
        """Distinct n-grams held (a proxy for memory)."""
        return len(self._table)


class SuffixProposer:
    """Drafts the most frequent continuation of the longest matching context suffix.

    Sources: the request's own prompt and output (always), and an index of previous requests' outputs
    (what the target generated; their prompts too with `index_prompts`), kept per workload tag (at
    most `max_tags` tags, least recently used evicted).
    """

    def __init__(
        self,
        name: str = "suffix",
        min_n: int = 2,
        max_n: int = 8,
        max_tokens: int = 65536,
        max_tags: int = 16,
        min_token_prob: float = 0.1,
        index_prompts: bool = False,
    ) -> None:
        self.name = name
        self.min_n, self.max_n, self.max_tokens = min_n, max_n, max_tokens
        self.max_tags, self.min_token_prob, self.index_prompts = max_tags, min_token_prob, index_prompts
        self._global: OrderedDict[str | None, NGramIndex] = OrderedDict()
        self._local = NGramIndex(min_n, max_n, max_tokens)
        self._local_tokens: list[int] = []
        self._request = RequestInfo(prompt_ids=())

    def _index_for(self, tag: str | None) -> NGramIndex:
        idx = self._global.get(tag)
        if idx is None:
            idx = self._global[tag] = NGramIndex(self.min_n, self.max_n, self.max_tokens)
            while len(self._global) > self.max_tags:
                self._global.popitem(last=False)
        self._global.move_to_end(tag)
        return idx

    def begin(self, request: RequestInfo) -> None:
        """Index the prompt as this request's local document."""
        self._request = request
        self._local = NGramIndex(self.min_n, self.max_n, self.max_tokens)
        self._local_tokens = list(request.prompt_ids)
        self._local.append(self._local_tokens, 0)

    def _best(self, context: Sequence[int]) -> Match | None:
        best = self._local.lookup(context)
        shared = self._global.get(self._request.tag)
        other = shared.lookup(context) if shared is not None else None
        if other is not None and (best is None or (other.length, other.prob) > (best.length, best.prob)):
            best = other
        return best

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Follow the best match token by token while its probability stays >= min_token_prob."""
        ext = list(context[-self.max_n :])
        tokens: list[int] = []
        confs: list[float] = []
        first_len = 0
        for i in range(max_tokens):
            m = self._best(ext)
            if m is None or m.prob < self.min_token_prob:
                break
            if i == 0:
                first_len = m.length
            tokens.append(m.token)
            confs.append(m.prob)
            ext = [*ext[1:], m.token] if len(ext) >= self.max_n else [*ext, m.token]
            if stop is not None and stop(i, m.prob):
                break
        return Draft(token_ids=tuple(tokens), probs=None, confidence=tuple(confs), match_length=first_len)

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Index the newly committed tokens into the request's local document."""
        start = len(self._local_tokens)
        self._local_tokens.extend(context[len(self._local_tokens) :])
        self._local.append(self._local_tokens, start)

    def end(self, output_ids: Sequence[int]) -> None:
        """Add this request (prompt tail or whole prompt, plus output) to the tag's shared index."""
        prompt = list(self._request.prompt_ids)
        head = prompt if self.index_prompts else prompt[-self.max_n :]
        self._index_for(self._request.tag).add([*head, *output_ids])
