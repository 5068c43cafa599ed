"""Spec-decode counters: deltas across scrapes (with counter resets) and the figures derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from adaspec.runtime import specmetrics


@dataclass(frozen=True)
class Counters:
    """Spec-decode counters of one pod, cumulative (as scraped) or a delta over a window.

    `per_position[i]` counts accepted draft tokens at draft position i. Acceptance rate is
    accepted / draft tokens; mean accepted length is 1 + accepted / drafts (vLLM's definitions).
    """

    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    generated: float = 0.0
    forward_passes: float = 0.0
    per_position: tuple[float, ...] = field(default=())

    def __add__(self, other: Counters) -> Counters:
        width = max(len(self.per_position), len(other.per_position))
        mine = self.per_position + (0.0,) * (width - len(self.per_position))
        theirs = other.per_position + (0.0,) * (width - len(other.per_position))
        return Counters(
            drafts=self.drafts + other.drafts,
            draft_tokens=self.draft_tokens + other.draft_tokens,
            accepted=self.accepted + other.accepted,
            generated=self.generated + other.generated,
            forward_passes=self.forward_passes + other.forward_passes,
            per_position=tuple(a + b for a, b in zip(mine, theirs, strict=True)),
        )

    @property
    def acceptance_rate(self) -> float | None:
        """Return accepted / draft tokens, or None when no draft token was proposed."""
        return specmetrics.acceptance_rate(self.accepted, self.draft_tokens)

    @property
    def mean_accepted_length(self) -> float | None:
        """Return 1 + accepted / drafts (tokens per target pass), or None without drafts."""
        return specmetrics.mean_accepted_length(self.accepted, self.drafts)

    def metric(self, name: str) -> float | None:
        """Return the figure called `name` (acceptance_rate or mean_accepted_length)."""
        if name == "acceptance_rate":
            return self.acceptance_rate
        if name == "mean_accepted_length":
            return self.mean_accepted_length
        raise ValueError(f"metric: unknown name {name!r} (valid: acceptance_rate, mean_accepted_length)")


def _scalars(c: Counters) -> tuple[float, ...]:
    return tuple(float(getattr(c, f.name)) for f in fields(c) if f.name != "per_position")


def is_reset(previous: Counters, current: Counters) -> bool:
    """Return True when any counter went down: the pod restarted and its counters began again at 0."""
    if any(cur < prev for prev, cur in zip(_scalars(previous), _scalars(current), strict=True)):
        return True
    return any(cur < prev for prev, cur in zip(previous.per_position, current.per_position, strict=False))


def delta(previous: Counters | None, current: Counters) -> Counters:
    """Return the increase from `previous` to `current` (Prometheus `increase` semantics).

    No previous scrape: the delta is empty (the first scrape only sets the base line). A reset
    (any counter lower than before): the whole current value counts, as in Prometheus.
    """
    if previous is None:
        return Counters()
    if is_reset(previous, current):
        return current
    width = len(current.per_position)
    prev_pos = previous.per_position + (0.0,) * max(0, width - len(previous.per_position))
    return Counters(
        drafts=current.drafts - previous.drafts,
        draft_tokens=current.draft_tokens - previous.draft_tokens,
        accepted=current.accepted - previous.accepted,
        generated=current.generated - previous.generated,
        forward_passes=current.forward_passes - previous.forward_passes,
        per_position=tuple(c - p for c, p in zip(current.per_position, prev_pos[:width], strict=True)),
    )
