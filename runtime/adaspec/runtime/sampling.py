"""Sampling parameters and the logits -> probabilities transform shared by target and draft."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are chosen. temperature == 0 means greedy (argmax); top_k == 0 means no top-k cut."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    # With a seed: draw the token at each position by Gumbel-max with noise keyed by (seed, position),
    # so the output depends on the seed and the prompt only, never on what was drafted (the same with
    # or without speculation, request after request). Exactly the target's distribution still.
    reproducible: bool = False

    def __post_init__(self) -> None:
        if not (self.temperature >= 0.0 and self.temperature <= 100.0):
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k!r}")
        if self.reproducible and self.seed is None:
            raise ValueError("reproducible sampling needs a seed")

    @property
    def greedy(self) -> bool:
        """True when decoding is argmax (no randomness)."""
        return self.temperature == 0.0


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Return next-token probabilities [n, vocab] (float32) from logits [n, vocab].

    Applies temperature, then top-k, then top-p (nucleus), exactly as for the target, so that
    target and draft distributions are transformed identically (a requirement of lossless
    speculative sampling). Greedy parameters yield a one-hot at the argmax.
    """
    logits = logits.float()  # [n, vocab]
    if params.greedy:
        out = torch.zeros_like(logits)
        out.scatter_(-1, logits.argmax(dim=-1, keepdim=True), 1.0)
        return out
    scaled = logits / params.temperature  # [n, vocab]
    if params.top_k and params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]  # [n, 1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)  # [n, vocab]
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the first token).
        cum_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = cum_before >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return torch.softmax(scaled, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """Draw one token id from probabilities [vocab]."""
    return int(torch.multinomial(probs, 1, generator=generator).item())


def position_gumbel(seed: int, position: int, vocab: int) -> torch.Tensor:
    """Gumbel(0, 1) noise [vocab] determined by (seed, position) alone."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + position) % (1 << 63))
    u = torch.rand(vocab, generator=g).clamp_(min=1e-12, max=1.0 - 1e-7)  # [vocab]
    return -torch.log(-torch.log(u))


def gumbel_scores(probs: torch.Tensor, seed: int, first_position: int) -> torch.Tensor:
    """Scores [n, vocab] whose argmax in row i is a sample of probs[i] keyed by (seed, first_position + i).

    Gumbel-max: argmax(log p + g) with g ~ Gumbel(0, 1) i.i.d. is distributed as p.
    """
    return gumbel_scores_at(probs, seed, range(first_position, first_position + probs.shape[0]))


def gumbel_scores_at(probs: torch.Tensor, seed: int, positions: Sequence[int]) -> torch.Tensor:
    """`gumbel_scores` with each row's position given: row i's argmax is a sample keyed by (seed,
    positions[i]) (a token tree's rows sit at the depth of their node, not one after another)."""
    n, vocab = probs.shape
    if len(positions) != n:
        raise ValueError(f"need one position per row: {n} rows, {len(positions)} positions")
    noise = torch.stack([position_gumbel(seed, pos, vocab) for pos in positions])  # [n, vocab]
    return torch.log(probs) + noise.to(probs.device)
