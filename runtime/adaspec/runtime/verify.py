"""Lossless verification of a draft against the target (greedy and rejection sampling).

Terms, for a draft d_1..d_k verified with the target's distributions p_1..p_{k+1}:
- *accepted* tokens: the longest prefix of the draft the target agrees with;
- *recovered* token: on the first rejection, a token drawn from the target's residual
  norm(max(0, p_i - q_i)) (greedy: the target's argmax) replacing the rejected draft token;
- *bonus* token: when all k draft tokens are accepted, one more token drawn from p_{k+1}.
Every verification therefore commits num_accepted + 1 tokens, and the committed sequence has
exactly the target's distribution (Leviathan et al., arXiv 2211.17192; Chen et al., arXiv 2302.01318).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adaspec.runtime.sampling import sample


@dataclass(frozen=True)
class Verdict:
    """Outcome of one verification: accepted draft prefix plus one recovered or bonus token."""

    num_accepted: int
    next_token: int

    def committed(self, draft_tokens: Sequence[int]) -> list[int]:
        """Return the tokens this verification commits."""
        return [*draft_tokens[: self.num_accepted], self.next_token]


def verify_greedy(target_logits: torch.Tensor, draft_tokens: Sequence[int]) -> Verdict:
    """Accept the longest draft prefix equal to the target's argmax, then add the target's own token.

    target_logits: [k+1, vocab], row i scores the token after (context + draft[:i]).
    """
    k = len(draft_tokens)
    if target_logits.shape[0] != k + 1:
        raise ValueError(f"target_logits has {target_logits.shape[0]} rows, expected k+1={k + 1}")
    argmax = target_logits.argmax(dim=-1).tolist()  # [k+1]
    n = 0
    while n < k and argmax[n] == draft_tokens[n]:
        n += 1
    return Verdict(num_accepted=n, next_token=int(argmax[n]))


def verify_sampling(
    target_probs: torch.Tensor,
    draft_probs: torch.Tensor | None,
    draft_tokens: Sequence[int],
    generator: torch.Generator | None,
) -> Verdict:
    """Speculative rejection sampling.

    target_probs: [k+1, vocab] target distributions after the shared sampling transform.
    draft_probs: [k, vocab] proposal distributions, or None when the proposer is deterministic
    (q is a point mass on each draft token: accept with probability p(x), residual is p with x removed).
    Token i is accepted with probability min(1, p_i(x)/q_i(x)); on rejection the recovered token is
    drawn from norm(max(0, p_i - q_i)); after k acceptances the bonus token is drawn from p_{k+1}.
    """
    k = len(draft_tokens)
    if target_probs.shape[0] != k + 1:
        raise ValueError(f"target_probs has {target_probs.shape[0]} rows, expected k+1={k + 1}")
    if draft_probs is not None and draft_probs.shape[0] != k:
        raise ValueError(f"draft_probs has {draft_probs.shape[0]} rows, expected k={k}")
    p_all = target_probs.double()  # [k+1, vocab]
    for i, x in enumerate(draft_tokens):
        p_i = p_all[i]  # [vocab]
        if draft_probs is None:
            q_i = torch.zeros_like(p_i)
            q_i[x] = 1.0
        else:
            q_i = draft_probs[i].double()  # [vocab]
        px, qx = float(p_i[x]), float(q_i[x])
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        if qx > 0.0 and u * qx < px:  # u < p/q without dividing
            continue
        residual = torch.clamp(p_i - q_i, min=0.0)  # [vocab]
        mass = float(residual.sum())
        # mass == 0 only when p == q exactly, where rejection has probability 0; guard anyway.
        recovered = sample(residual / mass if mass > 0.0 else p_i, generator)
        return Verdict(num_accepted=i, next_token=recovered)
    return Verdict(num_accepted=k, next_token=sample(p_all[k], generator))
