"""The verify phase of a decoding step: one target pass over the chosen drafts, as a chain or as a token
tree, the verdict, and the target's cache cut back to the context plus the accepted tokens."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from adaspec.runtime.models import CachedLM
from adaspec.runtime.proposers.base import Draft
from adaspec.runtime.sampling import SamplingParams, gumbel_scores, gumbel_scores_at, logits_to_probs
from adaspec.runtime.tree import DraftTree, verify_tree_greedy
from adaspec.runtime.verify import Verdict, verify_greedy, verify_sampling


@dataclass(frozen=True)
class Branch:
    """A draft the controller chose to verify: the first `k` tokens of `draft`, by proposer `name`."""

    name: str
    draft: Draft
    k: int

    @property
    def tokens(self) -> tuple[int, ...]:
        return self.draft.token_ids[: self.k]


@dataclass(frozen=True)
class Checked:
    """One verification's outcome; the target's cache already holds context + the accepted tokens."""

    committed: list[int]  # accepted drafted tokens, then the target's own one (before EOS trimming)
    num_accepted: int
    logits: torch.Tensor  # [num_accepted + 1, vocab]: the target's rows behind the committed tokens
    hidden: torch.Tensor | None  # [num_accepted + 1, H]: features there, when asked for
    seconds: float  # the target pass
    verified: int  # drafted tokens (tree nodes) the pass scored


def check(
    target: CachedLM,
    context: list[int],
    branches: Sequence[Branch],
    sampling: SamplingParams,
    gen: torch.Generator | None,
    features: bool,
) -> Checked:
    """Verify the branches (none: plain decoding; one: a chain; more: a token tree) in one target pass.

    Trees are verified only where the target's token at each position does not depend on the draw:
    greedy, and seeded sampling (Gumbel-max keyed by seed and position); otherwise the first branch
    alone is verified as a chain, with rejection sampling.
    """
    if len(branches) > 1 and (sampling.greedy or (sampling.reproducible and sampling.seed is not None)):
        return _check_tree(target, context, branches, sampling, features)
    return _check_chain(target, context, branches[0] if branches else None, sampling, gen, features)


def _check_chain(
    target: CachedLM,
    context: list[int],
    branch: Branch | None,
    sampling: SamplingParams,
    gen: torch.Generator | None,
    features: bool,
) -> Checked:
    tokens = list(branch.tokens) if branch is not None else []
    t0 = time.perf_counter()
    hidden = None
    if features:
        logits, hidden = target.feed_with_features([context[-1], *tokens])  # [k+1, vocab], [k+1, H]
    else:
        logits = target.feed([context[-1], *tokens])  # [k+1, vocab]
    verdict: Verdict
    if sampling.greedy:
        verdict = verify_greedy(logits, tokens)
    elif sampling.reproducible and sampling.seed is not None:
        # the target's own sample at each position is fixed by the seed: accept what matches it
        p = logits_to_probs(logits, sampling)  # [k+1, vocab]
        verdict = verify_greedy(gumbel_scores(p, sampling.seed, len(context)), tokens)
    else:
        p = logits_to_probs(logits, sampling)  # [k+1, vocab]
        probs = branch.draft.probs if branch is not None else None
        verdict = verify_sampling(p, None if probs is None else probs[: len(tokens)], tokens, gen)
    seconds = time.perf_counter() - t0
    target.truncate(len(context) + verdict.num_accepted)
    n = verdict.num_accepted + 1
    kept = None if hidden is None else hidden[:n]
    return Checked(verdict.committed(tokens), verdict.num_accepted, logits[:n], kept, seconds, len(tokens))


def _check_tree(
    target: CachedLM,
    context: list[int],
    branches: Sequence[Branch],
    sampling: SamplingParams,
    features: bool,
) -> Checked:
    tree = DraftTree.from_branches([b.tokens for b in branches])  # shared prefixes become shared nodes
    t0 = time.perf_counter()
    hidden = None
    if features:
        logits, hidden = target.feed_tree_with_features(context[-1], tree)  # [n+1, vocab], [n+1, H]
    else:
        logits = target.feed_tree(context[-1], tree)  # [n+1, vocab]
    if sampling.greedy:
        verdict = verify_tree_greedy(logits, tree)
    else:
        assert sampling.seed is not None
        rows = [len(context), *(len(context) + tree.depth(i) for i in range(tree.n))]  # each row's position
        scores = gumbel_scores_at(logits_to_probs(logits, sampling), sampling.seed, rows)
        verdict = verify_tree_greedy(scores, tree)
    seconds = time.perf_counter() - t0
    target.keep_path(verdict.path)
    idx = torch.tensor([0, *(i + 1 for i in verdict.path)], dtype=torch.long, device=logits.device)
    kept = None if hidden is None else hidden[idx]
    return Checked(verdict.committed(tree), verdict.num_accepted, logits[idx], kept, seconds, tree.n)
