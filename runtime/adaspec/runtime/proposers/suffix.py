"""`suffix`: model-free adaptive speculation from the continuations of recent traffic.

After SuffixDecoding (Oliaro et al., arXiv 2411.04975): one index over the current request (prompt
plus output so far) and one over previous requests, per workload tag, updated online after every
request, with frequency-scored continuations and bounded memory. A suffix tree's walk is done here
on a token buffer instead: every place where the context's last two tokens occur is a candidate, the
candidates whose preceding tokens match the context longest (up to `max_depth`, 32 by default) are
the matched node, and the draft follows the most frequent next token among them, keeping only the
candidates that agree, as a walk down the tree's subtree would. Deep matches (a copied block of code)
then draft long continuations with their measured frequencies as confidence, and a match never stops
at a fixed n-gram order.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting

_SEP = -1  # between documents in a buffer: never matched, never a continuation


@dataclass(frozen=True)
class Match:
    """Candidates for a context: positions in an index's buffer, each the token after `depth` tokens that
    match the context's last `depth` tokens."""

    depth: int
    positions: np.ndarray  # [n] int64


class SuffixIndex:
    """Documents in one token buffer, and where each token and each pair of tokens is followed in them.

    `max_tokens` bounds the tokens held (the oldest documents go first) and `max_per_key` the
    positions kept per token and per pair (the most recent), so memory and a lookup's work are bounded.
    """

    def __init__(self, max_depth: int = 32, max_tokens: int = 65536, max_per_key: int = 512) -> None:
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        if max_tokens < 1 or max_per_key < 1:
            raise ValueError(f"max_tokens and max_per_key must be >= 1, got {max_tokens}, {max_per_key}")
        self.max_depth, self.max_tokens, self.max_per_key = max_depth, max_tokens, max_per_key
        self._buf = np.full(1024, _SEP, dtype=np.int64)
        self._len = 0
        self._one: dict[int, list[int]] = {}  # token -> positions that follow it
        self._two: dict[tuple[int, int], list[int]] = {}  # pair -> positions that follow it
        self._docs: deque[tuple[int, int]] = deque()  # (start, end) in the buffer, oldest first
        self._open: int | None = None  # start of the document `extend` grows

    @property
    def size(self) -> int:
        """Tokens held."""
        grown = self._len - self._open if self._open is not None else 0
        return sum(end - start for start, end in self._docs) + grown

    @property
    def num_keys(self) -> int:
        """Distinct tokens and pairs indexed (a proxy for memory)."""
        return len(self._one) + len(self._two)

    def _note(self, table: dict[Any, list[int]], key: Any, p: int) -> None:
        row = table.setdefault(key, [])
        row.append(p)
        if len(row) > self.max_per_key:
            del row[: len(row) - self.max_per_key]

    def _push(self, tokens: Sequence[int]) -> None:
        n = len(tokens)
        if self._len + n > len(self._buf):
            grown = np.full(max(2 * len(self._buf), self._len + n), _SEP, dtype=np.int64)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        start = self._len
        self._buf[start : start + n] = tokens
        self._len += n
        buf = self._buf
        for p in range(max(start, 1), self._len):
            b = int(buf[p - 1])
            if b == _SEP or buf[p] == _SEP:
                continue
            self._note(self._one, b, p)
            a = int(buf[p - 2]) if p >= 2 else _SEP
            if a != _SEP:
                self._note(self._two, (a, b), p)

    def add(self, tokens: Sequence[int]) -> None:
        """Index a whole document (its last max_tokens tokens), evicting the oldest to stay bounded."""
        doc = [int(t) for t in tokens[-self.max_tokens :]]
        if not doc:
            return
        start = self._len + 1
        self._push([_SEP, *doc])
        self._docs.append((start, self._len))
        if self.size > self.max_tokens:
            self._evict()

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the one growing document (a request's own prompt and output)."""
        if self._open is None:
            self._push([_SEP])
            self._open = self._len
        self._push([int(t) for t in tokens])

    def _evict(self) -> None:
        """Drop the oldest documents until the rest fit in 3/4 of max_tokens, then rebuild the buffer."""
        keep: list[tuple[int, int]] = []
        total = 0
        for start, end in reversed(self._docs):
            if total + end - start > self.max_tokens * 3 // 4 and keep:
                break
            keep.append((start, end))
            total += end - start
        docs = [self._buf[s:e].tolist() for s, e in reversed(keep)]
        self._buf = np.full(max(1024, 2 * total), _SEP, dtype=np.int64)
        self._len = 0
        self._one.clear()
        self._two.clear()
        self._docs.clear()
        for doc in docs:
            self.add(doc)

    def matches(self, context: Sequence[int]) -> list[Match]:
        """Every distinct candidate set for the context's suffixes, shallow to deep.

        Depth 1: where the last token was followed; from depth 2 on, where the last pair was, kept while
        the tokens before match the context's (up to max_depth). A set is listed at the deepest depth
        it matches; the last one is the longest match. Empty when nothing matches.
        """
        if not context:
            return []
        out = []
        one = self._one.get(int(context[-1]))
        if one:
            out.append(Match(1, np.asarray(one, dtype=np.int64)))
        two = self._two.get((int(context[-2]), int(context[-1]))) if len(context) >= 2 else None
        if not two or self.max_depth < 2:
            return out
        positions = np.asarray(two, dtype=np.int64)
        depth = 2
        limit = min(self.max_depth, len(context))
        while depth < limit:
            back = positions - depth - 1
            ok = back >= 0
            ok[ok] = self._buf[back[ok]] == int(context[-depth - 1])
            if not ok.all():
                out.append(Match(depth, positions))
                if not ok.any():
                    return out
                positions = positions[ok]
            depth += 1
        out.append(Match(depth, positions))
        return out

    def match(self, context: Sequence[int]) -> Match | None:
        """The longest match, or None."""
        found = self.matches(context)
        return found[-1] if found else None

    def tokens_at(self, positions: np.ndarray, tail: Sequence[int] = ()) -> np.ndarray:
        """The tokens at these positions (_SEP past a document's end). `tail` continues the buffer's last
        document past its end: a draft walking the request's own context reads its own drafted tokens
        there, so a match near the end (a loop, a repeated block) runs on as the context would."""
        out = np.full(len(positions), _SEP, dtype=np.int64)
        inside = positions < self._len
        out[inside] = self._buf[positions[inside]]
        if tail and self._open is not None:
            ahead = (positions >= self._len) & (positions < self._len + len(tail))
            out[ahead] = np.asarray(tail, dtype=np.int64)[positions[ahead] - self._len]
        return out


def _most_frequent(tokens: np.ndarray) -> tuple[int, int]:
    """The most frequent real token among these (_SEP when none) and its count."""
    if len(tokens) <= 32:  # most walks: a handful of candidates, counted faster in Python
        counts = Counter(t for t in tokens.tolist() if t != _SEP)
        if not counts:
            return _SEP, 0
        token, count = counts.most_common(1)[0]
        return int(token), int(count)
    seen = tokens[tokens != _SEP]
    if not len(seen):
        return _SEP, 0
    values, counts_ = np.unique(seen, return_counts=True)
    best = int(counts_.argmax())
    return int(values[best]), int(counts_[best])


@dataclass
class Path:
    """A drafted continuation: its tokens, each one's frequency among the candidates that reached it, and
    its score (the sum of the cumulative frequencies: the expected number of its tokens accepted)."""

    depth: int
    tokens: list[int] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    score: float = 0.0


class SuffixProposer:
    """Drafts the most frequent continuation of the longest matching context suffix.

    Sources: the request's own prompt and output (always), and an index of previous requests' outputs
    (what the target generated; their prompts too with `index_prompts`), kept per workload tag (at
    most `max_tags` tags, least recently used evicted). The deeper of the two matches drafts; at equal
    depth their candidates count together. Each token's confidence is its frequency among the
    candidates still agreeing with the draft, smoothed (count / (n + 1)); drafting stops below
    `min_token_prob` or when no candidate continues.
    """

    def __init__(
        self,
        name: str = "suffix",
        max_depth: int = 32,
        max_tokens: int = 65536,
        max_tags: int = 16,
        min_token_prob: float = 0.1,
        index_prompts: bool = False,
        max_per_key: int = 512,
        max_spec_factor: float = 1.0,
    ) -> None:
        self.name = name
        self.max_depth, self.max_tokens, self.max_per_key = max_depth, max_tokens, max_per_key
        self.max_tags, self.min_token_prob, self.index_prompts = max_tags, min_token_prob, index_prompts
        self.max_spec_factor = max_spec_factor
        self._global: OrderedDict[str | None, SuffixIndex] = OrderedDict()
        self._local = self._new_index()
        self._local_len = 0
        self._request = RequestInfo(prompt_ids=())

    def _new_index(self) -> SuffixIndex:
        return SuffixIndex(self.max_depth, self.max_tokens, self.max_per_key)

    def _index_for(self, tag: str | None) -> SuffixIndex:
        idx = self._global.get(tag)
        if idx is None:
            idx = self._global[tag] = self._new_index()
            while len(self._global) > self.max_tags:
                self._global.popitem(last=False)
        self._global.move_to_end(tag)
        return idx

    def begin(self, request: RequestInfo) -> None:
        """Index the prompt as this request's local document."""
        self._request = request
        self._local = self._new_index()
        self._local.extend(request.prompt_ids)
        self._local_len = len(request.prompt_ids)

    def _limit(self, depth: int, max_tokens: int) -> int:
        """The longest path a match this deep may draft (SuffixDecoding's max_spec_factor)."""
        return min(max_tokens, max(1, int(depth * self.max_spec_factor)))

    def _walk(self, idx: SuffixIndex, match: Match, max_tokens: int) -> Path:
        """Follow the most frequent next token among the candidates still agreeing with the path."""
        positions = match.positions
        path = Path(depth=match.depth)
        cum = 1.0
        limit = self._limit(match.depth, max_tokens)
        while len(path.tokens) < limit and len(positions):
            nxt = idx.tokens_at(positions, path.tokens)
            token, count = _most_frequent(nxt)
            prob = count / len(nxt)  # documents that end here count against every token
            cum *= prob
            if token == _SEP or cum < self.min_token_prob:
                break
            path.tokens.append(token)
            path.confidence.append(prob)
            path.score += cum
            positions = positions[nxt == token] + 1
        return path

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Draft the best-scoring path over every match depth of both sources; `stop` may cut it short."""
        best = Path(depth=0)
        found = [
            (m, idx)
            for idx in (self._local, self._global.get(self._request.tag))
            if idx is not None
            for m in idx.matches(context)
        ]
        for match, idx in sorted(found, key=lambda f: -f[0].depth):  # deepest first
            if self._limit(match.depth, max_tokens) < best.score:
                break  # a path no longer than this could not score more, even if every token were sure
            path = self._walk(idx, match, max_tokens)
            if path.tokens and path.score > best.score:  # a tie stays with the deeper match
                best = path
        n = len(best.tokens)
        if stop is not None:
            n = next((i + 1 for i, c in enumerate(best.confidence) if stop(i, c)), n)
        return Draft(
            token_ids=tuple(best.tokens[:n]),
            probs=None,
            confidence=tuple(best.confidence[:n]),
            match_length=best.depth,
        )

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Index the newly committed tokens into the request's local document."""
        del num_new, target_logits
        self._local.extend(context[self._local_len :])
        self._local_len = len(context)

    def end(self, output_ids: Sequence[int]) -> None:
        """Add this request (prompt tail or whole prompt, plus output) to the tag's shared index."""
        prompt = list(self._request.prompt_ids)
        head = prompt if self.index_prompts else prompt[-self.max_depth :]
        self._index_for(self._request.tag).add([*head, *output_ids])
