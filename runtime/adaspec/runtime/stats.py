"""Per-generation statistics: what was generated, how many target passes, and per proposer acceptance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adaspec.runtime import specmetrics


@dataclass
class ProposerStats:
    """Counters of one proposer, in the shape of vLLM's spec-decode metrics."""

    drafts: int = 0  # verifications of this proposer's drafts
    draft_tokens: int = 0  # drafted tokens sent to verification
    accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)  # [k_max] accepted at each position
    failures: int = 0  # proposals that raised or were malformed (the step fell back to plain decoding)
    lookaheads: list[int] = field(default_factory=list)  # [k_max + 1] verifications with k drafted tokens
    proposals: int = 0  # times it was asked to draft (verified or not)
    propose_seconds: float = 0.0  # wall time of those calls, its catch-up included
    sync_seconds: float = 0.0  # of which catching up on committed tokens in a pass of its own

    def record(self, k: int, num_accepted: int) -> None:
        """Count one verification of k drafted tokens with num_accepted accepted."""
        if len(self.lookaheads) <= k:
            self.lookaheads.extend([0] * (k + 1 - len(self.lookaheads)))
        self.lookaheads[k] += 1
        self.drafts += 1
        self.draft_tokens += k
        self.accepted_tokens += num_accepted
        if len(self.accepted_per_position) < k:
            self.accepted_per_position.extend([0] * (k - len(self.accepted_per_position)))
        for i in range(num_accepted):
            self.accepted_per_position[i] += 1

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens (0 when nothing was drafted)."""
        return specmetrics.acceptance_rate(self.accepted_tokens, self.draft_tokens) or 0.0

    @property
    def mean_accepted_length(self) -> float:
        """1 + accepted / drafts (0 when nothing was drafted)."""
        return specmetrics.mean_accepted_length(self.accepted_tokens, self.drafts) or 0.0

    def merge(self, other: ProposerStats) -> None:
        """Add another set of counters into this one."""
        self.drafts += other.drafts
        self.draft_tokens += other.draft_tokens
        self.accepted_tokens += other.accepted_tokens
        self.failures += other.failures
        self.proposals += other.proposals
        self.propose_seconds += other.propose_seconds
        self.sync_seconds += other.sync_seconds
        self.accepted_per_position = _add_lists(self.accepted_per_position, other.accepted_per_position)
        self.lookaheads = _add_lists(self.lookaheads, other.lookaheads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {
            "drafts": self.drafts,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": self.accepted_tokens,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "accepted_per_position": list(self.accepted_per_position),
            "failures": self.failures,
            "proposals": self.proposals,
            "propose_seconds": round(self.propose_seconds, 4),
            "sync_seconds": round(self.sync_seconds, 4),
        }


def _add_lists(a: list[int], b: list[int]) -> list[int]:
    n = max(len(a), len(b))
    return [x + y for x, y in zip(a + [0] * (n - len(a)), b + [0] * (n - len(b)), strict=True)]


@dataclass
class GenerationStats:
    """Statistics of one generation (or, merged, of many)."""

    generated_tokens: int = 0
    target_forward_passes: int = 0  # decode passes (the prefill is not counted)
    decode_seconds: float = 0.0
    prefill_seconds: float = 0.0
    # of decode_seconds: the propose phases (drafting, a draft's catch-up, the controller's choices) and
    # the target's verification passes; the rest is observing (learners, the controller) and bookkeeping
    propose_seconds: float = 0.0
    verify_seconds: float = 0.0
    per_speculator: dict[str, ProposerStats] = field(default_factory=dict)

    @property
    def tokens_per_target_pass(self) -> float:
        """Tokens committed per target pass (1.0 without speculation, 0 before any pass)."""
        return specmetrics.tokens_per_target_pass(self.generated_tokens, self.target_forward_passes) or 0.0

    @property
    def mean_accepted_length(self) -> float:
        """1 + accepted / drafts over all proposers (vLLM's definition; 0 when nothing was drafted)."""
        drafts = sum(s.drafts for s in self.per_speculator.values())
        accepted = sum(s.accepted_tokens for s in self.per_speculator.values())
        return specmetrics.mean_accepted_length(accepted, drafts) or 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens over all proposers."""
        drafted = sum(s.draft_tokens for s in self.per_speculator.values())
        accepted = sum(s.accepted_tokens for s in self.per_speculator.values())
        return specmetrics.acceptance_rate(accepted, drafted) or 0.0

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second of decoding (prefill excluded: it is the same for every strategy)."""
        return self.generated_tokens / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def failures(self) -> int:
        """Proposer failures that fell back to plain decoding."""
        return sum(s.failures for s in self.per_speculator.values())

    def merge(self, other: GenerationStats) -> None:
        """Add another generation's statistics into this one."""
        self.generated_tokens += other.generated_tokens
        self.target_forward_passes += other.target_forward_passes
        self.decode_seconds += other.decode_seconds
        self.prefill_seconds += other.prefill_seconds
        self.propose_seconds += other.propose_seconds
        self.verify_seconds += other.verify_seconds
        for name, s in other.per_speculator.items():
            self.per_speculator.setdefault(name, ProposerStats()).merge(s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready statistics (the `stats` object of `adaspec generate --json`)."""
        return {
            "generated_tokens": self.generated_tokens,
            "target_forward_passes": self.target_forward_passes,
            "mean_accepted_length": round(self.mean_accepted_length, 4),
            "tokens_per_target_pass": round(self.tokens_per_target_pass, 4),
            "acceptance_rate": round(self.acceptance_rate, 4),
            "tokens_per_second": round(self.tokens_per_second, 2),
            "decode_seconds": round(self.decode_seconds, 4),
            "prefill_seconds": round(self.prefill_seconds, 4),
            "propose_seconds": round(self.propose_seconds, 4),
            "verify_seconds": round(self.verify_seconds, 4),
            "proposer_failures": self.failures,
            "per_speculator": {k: v.to_dict() for k, v in self.per_speculator.items()},
        }
