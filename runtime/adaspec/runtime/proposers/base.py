"""The one interface every proposer implements, and the draft it returns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from adaspec.runtime.sampling import SamplingParams


@dataclass(frozen=True)
class Draft:
    """Tokens proposed for the positions after the context.

    `probs` is the proposal distribution q the tokens were drawn from, one row per token, after the
    same temperature/top-k/top-p transform the target gets. `None` means a deterministic proposer
    (q is a point mass on each token), which verification handles exactly. `confidence` is the
    proposer's own estimate, per token, that the target will accept it (used by the controller to
    pick a bucket, never by verification).
    """

    token_ids: tuple[int, ...]  # [k]
    probs: torch.Tensor | None  # [k, vocab] float, rows sum to 1, or None for point masses
    confidence: tuple[float, ...]  # [k], each in [0, 1]
    match_length: int = 0  # suffix proposers: length of the context suffix matched (0 otherwise)
    # seconds of the call spent bringing the proposer's cache up to the committed context (the prompt on
    # a first draft, the tokens committed while it was not asked): paid whichever k is then verified, so
    # the controller does not charge it to the drafted tokens; it prices it before drafting (`behind`)
    sync_seconds: float = 0.0
    sync_tokens: int = 0  # tokens fed in those seconds (the controller learns a catch-up token's cost)

    @property
    def k(self) -> int:
        """Number of drafted tokens."""
        return len(self.token_ids)


@dataclass
class RequestInfo:
    """What a proposer may know about the request being served."""

    prompt_ids: Sequence[int]
    tag: str | None = None  # workload / tenant tag, e.g. "python"
    sampling: SamplingParams = field(default_factory=SamplingParams)
    generator: torch.Generator | None = None  # the request's seeded RNG, for sampled drafts


# A model proposer catches up on more committed tokens than this in a pass of its own (timed as the
# draft's `sync_seconds`) before the pass that yields its first draft token; fewer ride along in that pass.
SYNC_SPLIT = 8


def catch_up_tokens(pending: int) -> int:
    """Tokens a model proposer `pending` tokens behind the context feeds in a catch-up pass of its own
    before drafting (`SYNC_SPLIT`): all but the last, which rides along in its first draft step."""
    return pending - 1 if pending > SYNC_SPLIT else 0


# Called after each drafted token with (position index from 0, confidence); True stops drafting.
StopDrafting = Callable[[int, float], bool]


@runtime_checkable
class Proposer(Protocol):
    """A speculator. Lifecycle per request: begin -> (propose -> observe)* -> end.

    Proposers may keep state across requests (that is how adaptive ones learn), but never change
    the output: every draft goes through lossless verification. A model proposer may also have
    `behind(context) -> int`: the tokens its next `propose(context)` would catch up on in a pass of its
    own (`catch_up_tokens`), which the controller prices before asking it to draft.
    """

    name: str

    def begin(self, request: RequestInfo) -> None:
        """Prepare for a new request (reset per-request caches, index the prompt)."""

    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Draft up to `max_tokens` tokens continuing `context` (prompt + committed output).

        `stop`, when given, is asked after each token whether to stop early. Returns a Draft with
        0..max_tokens tokens. May raise; the engine then decodes this step without speculation.
        """

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """The target committed the last `num_new` tokens of `context` (accepted drafts + its own).

        `target_logits` [num_new, vocab] are the target's raw logits at the positions that produced
        those tokens (row i predicted context[-num_new + i]); distilling proposers learn from them.
        """

    def end(self, output_ids: Sequence[int]) -> None:
        """The request finished with these generated token ids (online learning happens here)."""
