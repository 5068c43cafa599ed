"""A draft's reduced output vocabulary: the most frequent target ids (FR-Spec, arXiv 2502.14856).

A small draft's output layer is most of its step: on SmolLM2-135M cut to two layers, a one-token step
took 14.95 ms with the full 49 152-row head, 4.09 ms without it and 6.18 ms with 8192 rows. Drafting
over the ids that make up most of the traffic keeps nearly all of the draft's agreement (the
Python-ranked 8192 ids hold the target's next token at 95% of Python positions) at a fraction of the
cost; verification stays exact, a token outside the ranking is simply never drafted. EAGLE-3
(arXiv 2503.01840) maps its draft vocabulary to the target's the same way.

`TokenCounts` ranks ids from counted tokens; a draft directory may carry its training tokens' counts in
`vocab.safetensors` (tensor `counts`, float64 [vocab]) so that serving starts from the ranking it was
trained for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from adaspec.runtime.sampling import SamplingParams, gumbel_scores, logits_to_probs, sample

DRAFT_VOCAB = 8192  # most rows of a reduced draft head (FR-Spec's size for 128k vocabularies is 8-32k)
VOCAB_FILE = "vocab.safetensors"  # in a draft or revision directory: {"counts": float64 [vocab]}
COUNT_HORIZON = 1e6  # a count table halves past this total (old traffic fades)
RERANK_MARGIN = 0.01
RECENT_TOKENS = 4096  # about ten requests: what a re-ranking is judged on (see TokenCounts)


def reduced_size(vocab: int) -> int:
    """Rows of a model draft's reduced head for a `vocab`-sized vocabulary: a quarter of it, at most
    `DRAFT_VOCAB` (8192 of SmolLM2's 49 152; 256 of the test fixtures' 1024)."""
    return max(1, min(DRAFT_VOCAB, vocab // 4))


@dataclass(frozen=True)
class VocabMap:
    """The reduced draft vocabulary and its output-layer rows (EAGLE-3's draft-to-target map)."""

    ids: torch.Tensor  # [Vd] long, ascending target ids
    head: torch.Tensor  # [Vd, H] float32: the output layer's rows for them
    index: torch.Tensor  # [vocab] long: position of each target id in `ids`, -1 outside

    @property
    def vocab(self) -> int:
        """Size of the full vocabulary the ids are drawn from."""
        return len(self.index)


def vocab_map(ids: torch.Tensor, head: torch.Tensor, device: torch.device | str) -> VocabMap:
    """The map for ids [Vd] (sorted here) of an output layer `head` [vocab, H], on `device`."""
    ids = ids.to(device=device, dtype=torch.long).sort().values  # [Vd]
    index = torch.full((head.shape[0],), -1, dtype=torch.long, device=device)
    index[ids] = torch.arange(len(ids), device=device)
    rows = head.detach().to(device)[ids].float()  # [Vd, H]
    return VocabMap(ids, rows, index)


class TokenCounts:
    """A bounded table of served token counts that ranks the reduced vocabulary (FR-Spec).

    The ranking is by all counts (old traffic included), but whether to re-rank is judged on the tokens
    counted since the last ranking: a language shift is a small share of a table that holds an offline
    corpus's 230 k tokens, and judged on the whole table it took some 20 requests to move at all; on
    SmolLM2 the Python-ranked 8192 ids held the target's next token at 84% of Go positions, and 94%
    once two Go requests were counted in.
    """

    def __init__(
        self, vocab: int, size: int, horizon: float = COUNT_HORIZON, margin: float = RERANK_MARGIN
    ) -> None:
        self.size, self.horizon, self.margin = min(size, vocab), horizon, margin
        self.counts = torch.zeros(vocab, dtype=torch.float64)  # [vocab]
        self.recent = torch.zeros(vocab, dtype=torch.float64)  # [vocab]: counted since the last ranking
        self.ids = torch.arange(self.size)  # [Vd] the current ranking (ascending ids)

    @classmethod
    def ranked(cls, counts: torch.Tensor, size: int, **kwargs: float) -> TokenCounts:
        """A table holding `counts` [vocab], ranked by them (ties to the lower id)."""
        table = cls(len(counts), size, **kwargs)
        table.counts = counts.double().clone()
        table.ids = table.best()
        return table

    @property
    def reduced(self) -> bool:
        """Whether the ranking leaves ids out (a vocabulary no larger than `size` is drafted whole)."""
        return self.size < len(self.counts)

    def best(self) -> torch.Tensor:
        """The `size` most counted ids, ascending: [Vd] long."""
        return torch.topk(self.counts, self.size).indices.sort().values

    def add(self, tokens: Sequence[int]) -> None:
        """Count served tokens (out-of-range ids ignored); halve the table when it passes the horizon."""
        t = torch.tensor(list(tokens), dtype=torch.long)
        t = t[(t >= 0) & (t < len(self.counts))]
        added = torch.bincount(t, minlength=len(self.counts)).double()
        self.counts += added
        self.recent += added
        recent = float(self.recent.sum())
        if recent > RECENT_TOKENS:  # a sliding judgement: old traffic fades from it
            self.recent *= RECENT_TOKENS / (2.0 * recent)
        total = float(self.counts.sum())
        if total > self.horizon:
            self.counts *= self.horizon / (2.0 * total)

    def rerank(self) -> bool:
        """Switch to the most frequent ids when they hold `margin` more of the tokens counted since the
        last ranking than the current ids do; True if switched."""
        recent = float(self.recent.sum())
        if not self.reduced or recent == 0.0:
            return False
        best = self.best()
        gain = float(self.recent[best].sum() - self.recent[self.ids].sum()) / recent
        if gain <= self.margin:
            return False
        self.ids = best
        self.recent.zero_()
        return True


def check_counts(counts: torch.Tensor, vocab: int, where: str) -> torch.Tensor:
    """`counts` as float64 [vocab] if it is one (finite, >= 0, not all zero); ValueError naming `where`."""
    if tuple(counts.shape) != (vocab,):
        raise ValueError(f"{where}: token counts have shape {tuple(counts.shape)}, expected ({vocab},)")
    counts = counts.double()
    total = float(counts.sum())
    if not math.isfinite(total) or bool((counts < 0).any()) or total <= 0.0:
        raise ValueError(f"{where}: token counts must be finite, >= 0 and not all zero")
    return counts


def save_counts(directory: Path, counts: torch.Tensor) -> Path:
    """Write `counts` [vocab] as `directory/vocab.safetensors`; return its path."""
    from safetensors.torch import save_file

    path = directory / VOCAB_FILE
    save_file({"counts": counts.detach().double().contiguous().cpu()}, str(path), metadata={"format": "pt"})
    return path


def read_counts(directory: Path, vocab: int) -> torch.Tensor | None:
    """The token counts a draft directory carries (None when it has no `vocab.safetensors`); ValueError
    when the file is unreadable or does not fit a `vocab`-sized vocabulary. Callers check the file's
    sha256 against the directory's manifest first (artifacts.read_manifest does)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / VOCAB_FILE
    if not path.is_file():
        return None
    try:
        counts = load_file(str(path)).get("counts")
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {exc}") from None
    if counts is None:
        raise ValueError(f"{str(path)!r} holds no 'counts' tensor")
    return check_counts(counts, vocab, repr(str(path)))


def draft_counts(directory: Path, vocab: int) -> torch.Tensor | None:
    """The token counts of a draft or revision directory, checked: when the directory has a manifest (a
    train-draft draft, a revision) the file must be listed in it with its sha256, and one it does not list
    is not read (None); a plain model directory's file is read as it is. ValueError when it does not fit."""
    import json

    from adaspec.runtime.artifacts import MANIFEST, sha256_file

    path = directory / VOCAB_FILE
    if not path.is_file():
        return None
    if (directory / MANIFEST).is_file():
        try:
            files = json.loads((directory / MANIFEST).read_text()).get("files") or {}
        except (ValueError, AttributeError):
            raise ValueError(f"{str(directory / MANIFEST)!r} is not a JSON object") from None
        if VOCAB_FILE not in files:
            return None
        if sha256_file(path) != files[VOCAB_FILE]:
            raise ValueError(f"sha256 of {VOCAB_FILE!r} in {str(directory)!r} does not match its manifest")
    return read_counts(directory, vocab)


def pick(
    logits: torch.Tensor,
    vocab: VocabMap | None,
    full: int,
    sampling: SamplingParams,
    generator: torch.Generator | None,
    position: int,
) -> tuple[int, float, torch.Tensor | None]:
    """Choose a draft token from `logits` over the reduced vocabulary [Vd] (or the full one [full] when
    `vocab` is None): (target id, confidence, proposal row [full] or None when greedy).

    Greedy takes the argmax; reproducible sampling the Gumbel-max draw keyed by (seed, position), the
    target's own noise, so a close draft agrees with it; other sampling draws from the draft's
    distribution after the target's transform. The proposal row is zero outside the reduced vocabulary
    (speculative sampling needs only q's support to be where the draft draws), and the confidence is
    the plain softmax probability of the token among the drafted ids.
    """
    plain = torch.softmax(logits.float(), dim=-1)  # [Vd or full]
    if sampling.greedy:
        slot = int(plain.argmax())
        return (slot if vocab is None else int(vocab.ids[slot])), min(1.0, float(plain[slot])), None
    q = logits_to_probs(logits[None, :], sampling)[0]  # [Vd or full]
    row = q
    if vocab is not None:
        row = torch.zeros(full, device=q.device)  # [full]
        row.index_copy_(0, vocab.ids, q)
    if sampling.reproducible and sampling.seed is not None:
        token = int(gumbel_scores(row[None], sampling.seed, position)[0].argmax())
        slot = token if vocab is None else int(vocab.index[token])
    else:
        slot = sample(q, generator)
        token = slot if vocab is None else int(vocab.ids[slot])
    return token, min(1.0, float(plain[slot])), row
