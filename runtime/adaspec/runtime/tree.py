"""Token trees: several draft continuations verified in one target pass (arXiv 2305.09781, 2406.16858).

A draft tree hangs below the *pending* token (the last context token, not yet in the target's KV
cache). The target scores [pending, *nodes] in one forward pass under a tree attention mask, where
every node sees the cached past, the pending token, its ancestors and itself, at position
past_len + depth (SpecInfer, Miao et al., arXiv 2305.09781; EAGLE-2, Li et al., arXiv 2406.16858).
Verification then walks one root path: greedy follows the target's argmax, sampling runs SpecInfer's
multi-step speculative sampling, which keeps exactly the target's distribution. As in `verify.py`,
every verification commits the accepted path plus one recovered or bonus token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from adaspec.runtime.sampling import sample

MAX_TREE_NODES = 256  # one verification pass scores at most this many draft nodes
ROOT = -1  # parent index of a child of the root (the pending token)


@dataclass(frozen=True)
class DraftTree:
    """Draft nodes in topological order (every parent precedes its children).

    `parents[i]` is the index of node i's parent, or ROOT (-1) for a child of the pending token.
    `probs[i]` is the proposal distribution q that node i's token was drawn from, conditioned on the
    path to its parent, after the sampling transform the target gets; None means deterministic
    proposers (q is a point mass on each token). Siblings with distributions must have been drawn
    independently of one another given their parent path (SpecInfer's condition for losslessness);
    the tree's shape must not depend on the drawn tokens. `confidence` is the proposer's estimate per
    node that the target accepts it, or empty when it gives none (never read by verification).
    """

    token_ids: tuple[int, ...]  # [n]
    parents: tuple[int, ...]  # [n], each in [-1, i)
    probs: torch.Tensor | None = None  # [n, vocab] float, rows sum to 1, or None for point masses
    confidence: tuple[float, ...] = ()  # [n] each in [0, 1], or () when unknown

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if n > MAX_TREE_NODES:
            raise ValueError(f"token_ids has {n} nodes, at most MAX_TREE_NODES={MAX_TREE_NODES} allowed")
        if len(self.parents) != n:
            raise ValueError(f"parents has {len(self.parents)} entries, expected one per node ({n})")
        for i, (tok, parent) in enumerate(zip(self.token_ids, self.parents, strict=True)):
            if tok < 0:
                raise ValueError(f"token_ids[{i}] must be >= 0, got {tok!r}")
            if not ROOT <= parent < i:
                raise ValueError(
                    f"parents[{i}] must be in [-1, {i}) (parents precede children), got {parent!r}"
                )
        if self.confidence and len(self.confidence) != n:
            raise ValueError(f"confidence has {len(self.confidence)} entries, expected 0 or {n}")
        for i, c in enumerate(self.confidence):
            if not 0.0 <= c <= 1.0:
                raise ValueError(f"confidence[{i}] must be in [0, 1], got {c!r}")
        if self.probs is not None:
            if self.probs.ndim != 2 or self.probs.shape[0] != n:
                raise ValueError(f"probs must have shape [n={n}, vocab], got {tuple(self.probs.shape)}")
            if not self.probs.is_floating_point():
                raise ValueError(f"probs must be a floating tensor, got {self.probs.dtype}")
            if n and max(self.token_ids) >= self.probs.shape[1]:
                raise ValueError(
                    f"token id {max(self.token_ids)} is outside probs' vocab {self.probs.shape[1]}"
                )

    @classmethod
    def chain(
        cls,
        tokens: Sequence[int],
        probs: torch.Tensor | None = None,  # [k, vocab]
        confidence: Sequence[float] = (),
    ) -> DraftTree:
        """Return the single-branch tree of a linear draft (node i is the child of node i-1)."""
        return cls(
            token_ids=tuple(int(t) for t in tokens),
            parents=tuple(range(-1, len(tokens) - 1)),
            probs=probs,
            confidence=tuple(float(c) for c in confidence),
        )

    @classmethod
    def from_branches(cls, branches: Sequence[Sequence[int]]) -> DraftTree:
        """Return the trie of deterministic branches: shared prefixes become shared nodes.

        Nodes are numbered in order of first appearance, so children keep their branches' order.
        Empty branches add nothing.
        """
        tokens: list[int] = []
        parents: list[int] = []
        index: dict[tuple[int, int], int] = {}  # (parent, token) -> node
        for branch in branches:
            parent = ROOT
            for tok in branch:
                key = (parent, int(tok))
                node = index.get(key)
                if node is None:
                    if len(tokens) >= MAX_TREE_NODES:
                        raise ValueError(f"branches need more than MAX_TREE_NODES={MAX_TREE_NODES} nodes")
                    node = len(tokens)
                    index[key] = node
                    tokens.append(int(tok))
                    parents.append(parent)
                parent = node
        return cls(token_ids=tuple(tokens), parents=tuple(parents))

    @property
    def n(self) -> int:
        """Number of nodes."""
        return len(self.token_ids)

    @cached_property
    def _children(self) -> tuple[tuple[int, ...], ...]:
        kids: list[list[int]] = [[] for _ in range(self.n + 1)]  # slot 0 is the root
        for i, parent in enumerate(self.parents):
            kids[parent + 1].append(i)
        return tuple(tuple(k) for k in kids)

    @cached_property
    def _depths(self) -> tuple[int, ...]:
        depths: list[int] = []
        for parent in self.parents:
            depths.append(1 if parent == ROOT else depths[parent] + 1)
        return tuple(depths)

    def _check_node(self, i: int, allow_root: bool) -> None:
        low = ROOT if allow_root else 0
        if not low <= i < self.n:
            raise ValueError(f"node index must be in [{low}, {self.n}), got {i!r}")

    def children(self, i: int) -> tuple[int, ...]:
        """Return the children of node i (ROOT, -1, for the children of the pending token), in order."""
        self._check_node(i, allow_root=True)
        return self._children[i + 1]

    def depth(self, i: int) -> int:
        """Return node i's depth: 1 for a child of the root, so its position is past_len + depth."""
        self._check_node(i, allow_root=False)
        return self._depths[i]

    @property
    def max_depth(self) -> int:
        """Return the depth of the deepest node (0 for an empty tree)."""
        return max(self._depths, default=0)

    def path(self, i: int) -> tuple[int, ...]:
        """Return the node indices from the root's child down to node i (inclusive)."""
        self._check_node(i, allow_root=False)
        out: list[int] = []
        while i != ROOT:
            out.append(i)
            i = self.parents[i]
        return tuple(reversed(out))

    def check_path(self, path: Sequence[int]) -> None:
        """Raise ValueError unless `path` descends from the root one child at a time."""
        parent = ROOT
        for step, node in enumerate(path):
            if not 0 <= node < self.n or self.parents[node] != parent:
                raise ValueError(f"path[{step}]={node!r} is not a child of node {parent} in the tree")
            parent = node


def tree_position_ids(tree: DraftTree, past_len: int) -> torch.Tensor:
    """Return position ids [1, n+1] for [pending, *nodes]: past_len, then past_len + depth per node."""
    if past_len < 0:
        raise ValueError(f"past_len must be >= 0, got {past_len!r}")
    depths = [0, *(tree.depth(i) for i in range(tree.n))]
    return (torch.tensor(depths, dtype=torch.long) + past_len).unsqueeze(0)  # [1, n+1]


def tree_visibility(tree: DraftTree) -> torch.Tensor:
    """Return a boolean [n+1, n+1] matrix over [pending, *nodes]: row r sees column c when True.

    The pending token sees itself; node i sees the pending token, its ancestors and itself.
    """
    n = tree.n
    vis = torch.zeros(n + 1, n + 1, dtype=torch.bool)  # [n+1, n+1]
    vis[:, 0] = True
    for i, parent in enumerate(tree.parents):  # topological: the parent's row is complete
        vis[i + 1] = vis[parent + 1]
        vis[i + 1, i + 1] = True
    return vis


def tree_attention_mask(
    tree: DraftTree,
    past_len: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Return the additive 4D mask [1, 1, n+1, past_len+n+1] for feeding [pending, *nodes] after the past.

    0 where a query may attend (all past positions, then `tree_visibility`), dtype's minimum elsewhere:
    the form Hugging Face models take as a ready-made 4D `attention_mask`.
    """
    if past_len < 0:
        raise ValueError(f"past_len must be >= 0, got {past_len!r}")
    n = tree.n
    allowed = torch.ones(n + 1, past_len + n + 1, dtype=torch.bool)  # [n+1, past+n+1]
    allowed[:, past_len:] = tree_visibility(tree)
    mask = torch.zeros(n + 1, past_len + n + 1, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask.to(device)[None, None]  # [1, 1, n+1, past+n+1]


@dataclass(frozen=True)
class TreeVerdict:
    """Outcome of one tree verification: an accepted root path plus one recovered or bonus token."""

    path: tuple[int, ...]  # accepted node indices, root's child first
    next_token: int

    @property
    def num_accepted(self) -> int:
        """Number of accepted draft nodes."""
        return len(self.path)

    def committed(self, tree: DraftTree) -> list[int]:
        """Return the tokens this verification commits."""
        return [*(tree.token_ids[i] for i in self.path), self.next_token]


def _check_rows(target: torch.Tensor, tree: DraftTree, name: str) -> None:
    if target.ndim != 2 or target.shape[0] != tree.n + 1:
        raise ValueError(f"{name} must have shape [n+1={tree.n + 1}, vocab], got {tuple(target.shape)}")
    if tree.n and max(tree.token_ids) >= target.shape[1]:
        raise ValueError(f"token id {max(tree.token_ids)} is outside {name}' vocab {target.shape[1]}")


def verify_tree_greedy(target_logits: torch.Tensor, tree: DraftTree) -> TreeVerdict:
    """Follow the child equal to the target's argmax from the root; return the accepted path and next argmax.

    target_logits: [n+1, vocab], row 0 scores the token after the pending one, row i+1 the token after
    node i. On a chain this is `verify_greedy`.
    """
    _check_rows(target_logits, tree, "target_logits")
    argmax = target_logits.argmax(dim=-1).tolist()  # [n+1]
    path: list[int] = []
    node = ROOT
    while True:
        want = argmax[node + 1]
        nxt = next((c for c in tree.children(node) if tree.token_ids[c] == want), None)
        if nxt is None:
            return TreeVerdict(path=tuple(path), next_token=int(want))
        path.append(nxt)
        node = nxt


def _residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Return norm(max(0, p - q)) [vocab], or p itself when no mass is left (then p == q: never reached)."""
    residual = torch.clamp(p - q, min=0.0)  # [vocab]
    mass = float(residual.sum())
    return residual / mass if mass > 0.0 else p


def verify_tree_sampling(
    target_probs: torch.Tensor, tree: DraftTree, generator: torch.Generator | None
) -> TreeVerdict:
    """Multi-step speculative sampling over a tree (SpecInfer's MSS, arXiv 2305.09781); return the verdict.

    target_probs: [n+1, vocab] target distributions after the shared sampling transform, rows as in
    `verify_tree_greedy`. At a node with target distribution p, children are tried in order: child x
    with proposal q is accepted with probability min(1, p(x)/q(x)); on rejection p becomes
    norm(max(0, p - q)) for the next sibling (a point mass q removes x from p, so a repeated
    deterministic token is never accepted twice). When every child is rejected the recovered token is
    drawn from the final residual; at a leaf the bonus token is drawn from p. The committed tokens
    have exactly the target's distribution; on a chain this is `verify_sampling`, draw for draw.
    """
    _check_rows(target_probs, tree, "target_probs")
    p_all = target_probs.double()  # [n+1, vocab]
    q_all = None if tree.probs is None else tree.probs.double()  # [n, vocab]
    path: list[int] = []
    node = ROOT
    while True:
        p = p_all[node + 1]  # [vocab]
        accepted = None
        for child in tree.children(node):
            x = tree.token_ids[child]
            if q_all is None:
                q = torch.zeros_like(p)
                q[x] = 1.0
            else:
                q = q_all[child]  # [vocab]
            px, qx = float(p[x]), float(q[x])
            u = float(torch.rand((), generator=generator, dtype=torch.float64))
            if qx > 0.0 and u * qx < px:  # u < p/q without dividing
                accepted = child
                break
            p = _residual(p, q)
        if accepted is None:
            return TreeVerdict(path=tuple(path), next_token=sample(p, generator))
        path.append(accepted)
        node = accepted
