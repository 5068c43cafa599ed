"""Per-generation statistics: what was generated, how many target passes, and per proposer acceptance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ProposerStats:
    """Counters of one proposer, in the shape of vLLM's spec-decode metrics."""

    drafts: int = 0  # verifications of this proposer's drafts
    draft_tokens: int = 0  # drafted tokens sent to verification
    accepted_tokens: int = 0
    accepted_per_position: list[int] = field(default_factory=list)  # [k_max] accepted at each position
    failures: int = 0  # proposals that raised or were malformed (the step fell back to plain decoding)

    def record(self, k: int, num_accepted: int) -> None:
        """Count one verification of k drafted tokens with num_accepted accepted."""
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
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    def merge(self, other: ProposerStats) -> None:
        """Add another set of counters into this one."""
        self.drafts += other.drafts
        self.draft_tokens += other.draft_tokens
        self.accepted_tokens += other.accepted_tokens
        self.failures += other.failures
        n = max(len(self.accepted_per_position), len(other.accepted_per_position))
        a = self.accepted_per_position + [0] * (n - len(self.accepted_per_position))
        b = other.accepted_per_position + [0] * (n - len(other.accepted_per_position))
        self.accepted_per_position = [x + y for x, y in zip(a, b, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {
            "drafts": self.drafts,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": self.accepted_tokens,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "accepted_per_position": list(self.accepted_per_position),
            "failures": self.failures,
        }


@dataclass
class GenerationStats:
    """Statistics of one generation (or, merged, of many)."""

    generated_tokens: int = 0
    target_forward_passes: int = 0  # decode passes (the prefill is not counted)
    decode_seconds: float = 0.0
    prefill_seconds: float = 0.0
    per_speculator: dict[str, ProposerStats] = field(default_factory=dict)

    @property
    def mean_accepted_length(self) -> float:
        """Tokens committed per target pass (1.0 without speculation)."""
        return self.generated_tokens / self.target_forward_passes if self.target_forward_passes else 0.0

    @property
    def acceptance_rate(self) -> float:
        """Accepted / drafted tokens over all proposers."""
        drafted = sum(s.draft_tokens for s in self.per_speculator.values())
        accepted = sum(s.accepted_tokens for s in self.per_speculator.values())
        return accepted / drafted if drafted else 0.0

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
        for name, s in other.per_speculator.items():
            self.per_speculator.setdefault(name, ProposerStats()).merge(s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready statistics (the `stats` object of `adaspec generate --json`)."""
        return {
            "generated_tokens": self.generated_tokens,
            "target_forward_passes": self.target_forward_passes,
            "mean_accepted_length": round(self.mean_accepted_length, 4),
            "acceptance_rate": round(self.acceptance_rate, 4),
            "tokens_per_second": round(self.tokens_per_second, 2),
            "decode_seconds": round(self.decode_seconds, 4),
            "prefill_seconds": round(self.prefill_seconds, 4),
            "proposer_failures": self.failures,
            "per_speculator": {k: v.to_dict() for k, v in self.per_speculator.items()},
        }
