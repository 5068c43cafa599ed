"""`feature`: an EAGLE draft over the target's own features, reduced vocabulary, learning online."""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from adaspec.runtime.proposers.adaptive import (
    GATE_LOOKAHEAD,
    GATE_WINDOW,
    LearnsOnline,
    Trainer,
    chain_lengths_by_depth,
)
from adaspec.runtime.proposers.base import Draft, RequestInfo, StopDrafting, catch_up_tokens
from adaspec.runtime.proposers.vocab import (
    COUNT_HORIZON,
    DRAFT_VOCAB,
    RERANK_MARGIN,
    TokenCounts,
    VocabMap,
    pick,
    vocab_map,
)
from adaspec.runtime.sampling import SamplingParams

log = logging.getLogger("adaspec.feature")

# One module on purpose (over the house's 400 lines): the network, its vocabulary, its learner and
# its proposer change together, and the checkout this was written in let it own one file only.


@dataclass(frozen=True)
class FeatureConfig:
    """Draft shape and online-learning settings."""

    vocab_size: int = DRAFT_VOCAB  # reduced draft vocabulary (FR-Spec); the full vocab when that is smaller
    intermediate: int | None = None  # the draft layer's MLP width (None: the target's)
    lr: float = 1e-3
    steps_per_request: int = 4
    batch_size: int = 4  # served requests per optimisation step (newest + replayed ones)
    buffer_size: int = 32  # served requests kept for replay
    max_positions: int = 512  # positions kept per served request (its last ones)
    feature_weight: float = 1.0  # smooth-L1 on the predicted feature (EAGLE)
    token_weight: float = 1.0  # cross-entropy to the target's next-token distribution (forward KL)
    top1_weight: float = 1.0  # cross-entropy to the target's argmax (what greedy verification accepts)
    train_depth: int = 3  # drafting steps unrolled in training (EAGLE-3's training-time test; 1: none)
    feature_noise: float = 0.0  # uniform noise on input features while training (EAGLE uses 0.1 or so)
    count_horizon: float = COUNT_HORIZON  # the token-count table halves past this total (forgets old traffic)
    # re-rank when the best vocabulary holds this much more of the recently counted tokens (TokenCounts)
    rerank_margin: float = RERANK_MARGIN
    background: bool = False  # train in a worker thread (serving) or inline at request end (tests)
    compute_share: float = 0.25  # background: fraction of wall time the worker may train
    seed: int = 0

    def __post_init__(self) -> None:
        counts = (
            "vocab_size",
            "steps_per_request",
            "batch_size",
            "buffer_size",
            "max_positions",
            "train_depth",
        )
        for key in counts:
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)!r}")
        if not 0.0 < self.compute_share <= 1.0:
            raise ValueError(f"compute_share must be in (0, 1], got {self.compute_share!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        weights = (self.feature_weight, self.token_weight, self.top1_weight)
        if min(weights) < 0 or sum(weights) == 0:
            raise ValueError(f"feature/token/top1 loss weights must be >= 0, not all 0; got {weights!r}")


@dataclass(frozen=True)
class TargetParts:
    """The frozen pieces of the target the draft reads (shared by reference, never trained)."""

    model: Any  # the HF causal LM (for computing features offline)
    embed: torch.Tensor  # [vocab, H] input embeddings
    head: torch.Tensor  # [vocab, H] lm_head rows: logits = feature @ head.T
    norm: torch.Tensor  # [H] final RMSNorm weight (the draft's own final norm starts from it)
    dims: tuple[int, int, int, int, int]  # hidden, heads, kv_heads, head_dim, intermediate
    eps: float
    theta: float

    @property
    def vocab(self) -> int:
        """Rows of the target's output layer."""
        return int(self.head.shape[0])


def target_parts(target: Any, intermediate: int | None = None) -> TargetParts:
    """The embeddings, head, norm and shape of a Llama-architecture target; ValueError if it has none."""
    model: Any = target if hasattr(target, "lm_head") else getattr(target, "model", None)  # a CachedLM too
    try:
        # detached views: no copy, and no gradient ever reaches the target
        embed, head = model.model.embed_tokens.weight.detach(), model.lm_head.weight.detach()
        norm, cfg = model.model.norm.weight.detach(), model.config
    except AttributeError as exc:
        raise ValueError(
            "the feature draft needs a Llama-architecture target with model.model.embed_tokens, "
            f"model.lm_head, model.model.norm and model.config; got {type(target).__name__}"
        ) from exc
    hidden, heads = int(cfg.hidden_size), int(cfg.num_attention_heads)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    width = int(intermediate or cfg.intermediate_size)
    if head_dim % 2 or heads % kv_heads:
        raise ValueError(f"unsupported attention shape: head_dim {head_dim}, heads {heads}, kv {kv_heads}")
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0)))
    eps = float(getattr(cfg, "rms_norm_eps", 1e-6))
    return TargetParts(model, embed, head, norm, (hidden, heads, kv_heads, head_dim, width), eps, theta)


@torch.no_grad()
def target_features(model: Any, token_ids: Sequence[int]) -> torch.Tensor:
    """The target's features [T, H]: final hidden states after the final norm (lm_head(h[i]) = logits[i])."""
    device = model.lm_head.weight.device
    x = torch.tensor([list(token_ids)], dtype=torch.long, device=device)  # [1, T]
    h: torch.Tensor = model.model(input_ids=x).last_hidden_state[0]  # [T, H]
    return h


def _rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary position embedding of x [heads, T, d] at positions [T] (half-split, as Llama)."""
    d = x.shape[-1]
    inv = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)  # [d/2]
    ang = positions.to(x.device, torch.float32)[:, None] * inv[None, :]  # [T, d/2]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)  # [T, d]
    rot = torch.cat([-x[..., d // 2 :], x[..., : d // 2]], dim=-1)
    return x * cos + rot * sin


KV = tuple[torch.Tensor, torch.Tensor]  # keys, values: [kv_heads, S, head_dim] each


class FeatureDraftNet(nn.Module):
    """EAGLE's draft (arXiv 2401.15077): fc(concat(embedding of x_t, feature f_{t-1})) -> one decoder
    layer (RMSNorm, GQA attention with RoPE, SwiGLU MLP) -> RMSNorm -> predicted feature f_t.

    Causal over the draft's own sequence of steps; `past` holds the keys and values of earlier steps.
    """

    def __init__(self, dims: tuple[int, int, int, int, int], eps: float, theta: float) -> None:
        super().__init__()
        hidden, heads, kv_heads, head_dim, width = dims
        self.dims, self.theta = dims, theta
        self.fc = nn.Linear(2 * hidden, hidden)
        self.attn_norm = nn.RMSNorm(hidden, eps=eps)
        self.q = nn.Linear(hidden, heads * head_dim, bias=False)
        self.k = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, hidden, bias=False)
        self.mlp_norm = nn.RMSNorm(hidden, eps=eps)
        self.gate = nn.Linear(hidden, width, bias=False)
        self.up = nn.Linear(hidden, width, bias=False)
        self.down = nn.Linear(width, hidden, bias=False)
        self.norm = nn.RMSNorm(hidden, eps=eps)

    def forward(
        self, feats: torch.Tensor, embeds: torch.Tensor, start: int, past: KV | None = None
    ) -> tuple[torch.Tensor, KV]:
        """Predict features [T, H] of steps start..start+T-1 from feats [T, H] (f_{t-1}) and embeds
        [T, H] (x_t); return them with the keys and values of all steps so far."""
        n = feats.shape[0]
        s = n + (0 if past is None else past[0].shape[1])
        rows = torch.arange(s - n, s, device=feats.device)  # [T]: each step's index among the keys
        mask = torch.arange(s, device=feats.device)[None, :] <= rows[:, None]  # [T, S] causal
        return self._layer(feats, embeds, start, past, mask)

    def unrolled(
        self, prev: torch.Tensor, embeds: torch.Tensor, start: int, depth: int
    ) -> list[torch.Tensor]:
        """Training-time test (EAGLE-3, arXiv 2503.01840): pass 1 reads the true features prev [T, H];
        pass j reads pass j-1's predictions and attends as drafting step j does: to the true steps
        <= t-j+1 and to passes 2..j at t-j+2..t. Returns each pass's predictions [T, H] (rows t < j-1
        have no such chain and carry no signal)."""
        out, kv = self.forward(prev, embeds, start)
        outs = [out]
        n = prev.shape[0]
        t = torch.arange(n, device=prev.device)
        for j in range(2, depth + 1):
            inp = torch.cat([prev[:1], outs[-1][:-1].detach()])  # [T, H]: pass j-1's f_{t-1}
            blocks = [t[None, :] <= (t - j + 1)[:, None]]
            blocks += [t[None, :] == (t - j + i)[:, None] for i in range(2, j + 1)]
            out, kv = self._layer(inp, embeds, start, kv, torch.cat(blocks, dim=1))  # mask [T, j*T]
            outs.append(out)
        return outs

    def _layer(
        self, feats: torch.Tensor, embeds: torch.Tensor, start: int, past: KV | None, mask: torch.Tensor
    ) -> tuple[torch.Tensor, KV]:
        _, heads, kv_heads, head_dim, _ = self.dims
        n = feats.shape[0]
        x = self.fc(torch.cat([embeds, feats], dim=-1))  # [T, H]
        h = self.attn_norm(x)
        pos = torch.arange(start, start + n, device=x.device)  # [T]
        q = _rope(self.q(h).view(n, heads, head_dim).transpose(0, 1), pos, self.theta)  # [heads, T, d]
        k = _rope(self.k(h).view(n, kv_heads, head_dim).transpose(0, 1), pos, self.theta)  # [kv, T, d]
        v = self.v(h).view(n, kv_heads, head_dim).transpose(0, 1)  # [kv, T, d]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)  # [kv, S, d]
        att = F.scaled_dot_product_attention(
            q[None], k[None], v[None], attn_mask=mask[None, None], enable_gqa=True
        )
        x = x + self.o(att[0].transpose(0, 1).reshape(n, heads * head_dim))  # [T, H]
        m = self.mlp_norm(x)
        x = x + self.down(F.silu(self.gate(m)) * self.up(m))
        return self.norm(x), (k, v)


@dataclass(frozen=True)
class FeatureExample:
    """A served request's positions start..start+T-1: tokens, and the target's features there."""

    tokens: torch.Tensor  # [T] long
    prev: torch.Tensor  # [H]: the feature at start-1 (zeros when start == 0)
    features: torch.Tensor  # [T, H]: h[start + i] read tokens[i] and predicts the next token
    start: int
    first_scored: int  # index in `tokens` of the first generated position (agreement is measured there)


def feature_example(
    tokens: Sequence[int], features: torch.Tensor, gen_start: int, cap: int, device: torch.device
) -> FeatureExample | None:
    """An example from features [F, H] of tokens[:F] (its last `cap` positions); None when empty."""
    n = min(len(tokens), features.shape[0])
    if n < 1:
        return None
    start = max(0, n - cap)
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable by autograd later
        feats = features[start:n].detach().to(device).clone()  # [T, H]
        prev = features[start - 1].detach().to(device).clone() if start else torch.zeros_like(feats[0])
        ids = torch.tensor(list(tokens[start:n]), dtype=torch.long, device=device)  # [T]
    return FeatureExample(ids, prev, feats, start, max(0, min(gen_start - 1 - start, n - start - 1)))


class FeatureLearner:
    """The training copy of the draft, its replay buffer and optimiser; publishes snapshots under a lock.

    `add` and `vocab` are set from the serving thread; `step` runs on whichever thread trains.
    """

    def __init__(self, net: FeatureDraftNet, parts: TargetParts, cfg: FeatureConfig, vocab: VocabMap) -> None:
        self.cfg, self.parts, self.net = cfg, parts, net.train()
        self.vocab = vocab  # replaced whole (an atomic assignment) when the ranking changes
        self.opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.buffer: deque[FeatureExample] = deque(maxlen=cfg.buffer_size)
        self.rng = random.Random(cfg.seed)
        self.gen = torch.Generator(device=parts.head.device).manual_seed(cfg.seed)
        self.on_estimate: Callable[[float], None] | None = None
        self._pending: list[FeatureExample] = []
        self._lock = threading.Lock()  # guards _pending and the published snapshot
        self.train_lock = threading.Lock()  # held by a step (and by loads, which replace the weights)
        self.version, self.steps = 0, 0
        self.last_loss = float("nan")
        self.prequential_accuracy: float | None = None  # EMA of top-1 agreement on unseen requests
        self._snapshot: dict[str, torch.Tensor] | None = None
        # what serving drafts with (the last published weights), kept here to race the training copy
        self._served = copy.deepcopy(net).eval().requires_grad_(False)
        self._race: deque[float] = deque(maxlen=GATE_WINDOW)  # training minus served, per unseen request

    def add(self, ex: FeatureExample) -> None:
        """Queue a served request for learning."""
        with self._lock:
            self._pending.append(ex)

    @torch.no_grad()
    def _target_top(self, ex: FeatureExample) -> torch.Tensor:
        """The target's full-vocabulary argmax at every position of `ex`: [T] long."""
        feats = ex.features.to(self.parts.head.dtype)
        return torch.cat([(f @ self.parts.head.T).argmax(-1) for f in torch.split(feats, 64)])

    @torch.no_grad()
    def agreement(self, net: FeatureDraftNet, ex: FeatureExample, vocab: VocabMap) -> float:
        """Teacher-forced top-1 agreement of `net` with the target's full-vocab argmax at scored positions."""
        out = self._predict(net, ex)[ex.first_scored :]  # [G, H]
        draft = vocab.ids[(out @ vocab.head.T).argmax(-1)]  # [G]
        return float((draft == self._target_top(ex)[ex.first_scored :]).float().mean())

    @torch.no_grad()
    def chains(
        self, net: FeatureDraftNet, ex: FeatureExample, vocab: VocabMap, k: int = GATE_LOOKAHEAD
    ) -> float:
        """Mean tokens a k-token chain drafted by `net` would have had accepted, from each scored position.

        Drafting step j reads the j-1 features the draft predicted before it, so the chain is scored on
        the training-time-test unroll (`FeatureDraftNet.unrolled`): token j of the chain that starts after
        true position s is pass j's prediction at row s + j - 1. Greedy acceptance: the target's argmax.
        """
        prev, embeds = self._inputs(ex)
        top = self._target_top(ex)  # [T]
        hits = [
            vocab.ids[(o @ vocab.head.T).argmax(-1)] == top for o in net.unrolled(prev, embeds, ex.start, k)
        ]
        scored = chain_lengths_by_depth(hits)[ex.first_scored :]  # chain from row s: pass j+1 at row s + j
        return float(scored.mean()) if len(scored) else 0.0

    def _inputs(self, ex: FeatureExample, noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        feats = ex.features.float()  # [T, H]
        prev = torch.cat([ex.prev.float()[None], feats[:-1]])  # [T, H] input f_{t-1}
        if noise > 0:
            prev = prev + noise * (2 * torch.rand(prev.shape, generator=self.gen, device=prev.device) - 1)
        return prev, F.embedding(ex.tokens, self.parts.embed).float()  # [T, H] each

    def _predict(self, net: FeatureDraftNet, ex: FeatureExample) -> torch.Tensor:
        out: torch.Tensor = net(*self._inputs(ex), ex.start)[0]  # [T, H]
        return out

    def loss(self, ex: FeatureExample, vocab: VocabMap) -> torch.Tensor:
        """EAGLE's loss at each unrolled pass: smooth-L1 to the true feature, cross-entropy to the
        target's distribution over the reduced vocabulary (softmax of the frozen head at the true
        feature, renormalised) and, optionally, to its argmax; pass j weighs 0.8^(j-1) (EAGLE-3)."""
        prev, embeds = self._inputs(ex, self.cfg.feature_noise)
        feats = ex.features.float()  # [T, H]
        with torch.no_grad():
            p = torch.softmax(feats @ vocab.head.T, dim=-1)  # [T, Vd]
            top = p.argmax(-1)  # [T]
        total, weights = feats.new_zeros(()), 0.0
        for j, out in enumerate(self.net.unrolled(prev, embeds, ex.start, self.cfg.train_depth)):
            if j >= len(feats):
                break
            logq = torch.log_softmax(out[j:] @ vocab.head.T, dim=-1)  # [T - j, Vd]
            loss = self.cfg.feature_weight * F.smooth_l1_loss(out[j:], feats[j:])
            loss = loss - self.cfg.token_weight * (p[j:] * logq).sum(-1).mean()
            if self.cfg.top1_weight > 0:
                loss = loss + self.cfg.top1_weight * F.nll_loss(logq, top[j:])
            total, weights = total + 0.8**j * loss, weights + 0.8**j
        return total / weights

    def train_on(self, batch: Sequence[FeatureExample]) -> float:
        """One AdamW step on `batch` (not published: `publish` or the gate in `step` does that); the loss."""
        vocab = self.vocab
        with self.train_lock, torch.inference_mode(False), torch.enable_grad():
            self.opt.zero_grad(set_to_none=True)
            total = 0.0
            for ex in batch:
                loss = self.loss(ex, vocab) / len(batch)
                loss.backward()  # type: ignore[no-untyped-call]
                total += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            self.steps += 1
            self.last_loss = total
        return total

    def publish(self) -> None:
        """Make the training weights the served ones (the next request's `begin` swaps them in)."""
        with self.train_lock:
            weights = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self._served.load_state_dict(weights)
            self._race.clear()
            with self._lock:  # published under the train lock, so a load never sees it land after
                self._snapshot = weights
                self.version += 1

    def step(self) -> bool:
        """Score each new request (prequential) and race the training weights against the served ones on
        it, publishing them when they win (`_judge`); then one step on newest + replayed requests.
        False: nothing to learn."""
        with self._lock:
            new, self._pending = self._pending, []
        for ex in new:
            with self.train_lock:
                acc = self.agreement(self.net, ex, self.vocab)
            p = self.prequential_accuracy
            self.prequential_accuracy = acc if p is None else 0.7 * p + 0.3 * acc
            self._judge(ex)
            self.buffer.append(ex)
        if new and self.on_estimate is not None and self.prequential_accuracy is not None:
            self.on_estimate(self.prequential_accuracy)
        if not self.buffer:
            return False
        older = list(self.buffer)[:-1]
        self.train_on([self.buffer[-1], *self.rng.sample(older, min(len(older), self.cfg.batch_size - 1))])
        return True

    def _judge(self, ex: FeatureExample) -> None:
        """Before learning from a request, race the training weights against the served ones on it, by
        the tokens their drafted chains would have had accepted (`chains`); publish the training weights
        once they are ahead on each of the last `GATE_WINDOW` such requests, as the adaptive draft's gate
        does (`OnlineDistiller._judge`: a few requests' fine-tuning must never set serving back)."""
        with self.train_lock:
            vocab = self.vocab
            race = self.chains(self.net, ex, vocab) - self.chains(self._served, ex, vocab)
        self._race.append(race)
        if len(self._race) == GATE_WINDOW and min(self._race) > 0:
            self.publish()

    def snapshot(self) -> tuple[int, dict[str, torch.Tensor] | None]:
        """Return (version, weights) of the latest trained draft."""
        with self._lock:
            return self.version, self._snapshot

    def replace_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Start training from `weights` (a fresh optimiser; any unpublished snapshot dropped)."""
        with self.train_lock:
            self.net.load_state_dict(weights)
            self.opt = torch.optim.AdamW(self.net.parameters(), lr=self.cfg.lr, weight_decay=0.0)
            self._served.load_state_dict(weights)
            self._race.clear()
            with self._lock:
                self._snapshot = None


class FeatureProposer(LearnsOnline):
    """Drafts from the target's features with an EAGLE head that keeps learning from served traffic.

    A step reads (f_{t-1}, x_t) and predicts f_t, whose logits over the reduced vocabulary are
    lm_head rows @ f_t (arXiv 2401.15077; EAGLE-3, arXiv 2503.01840, drafts the same way). Committed
    steps use the target's exact features and stay in the draft's KV cache; drafted ones feed the
    predicted feature back and are dropped after each proposal. Every served position (the prompt's
    too) is training signal (TIDE, arXiv 2602.05145); training runs inline at `end` or in a worker
    thread, and the serving weights change only in `begin`. The reduced vocabulary is the most
    frequent served ids (FR-Spec, arXiv 2502.14856), re-ranked between requests.
    """

    needs_features: ClassVar[bool] = True

    def __init__(
        self,
        target: Any,
        cfg: FeatureConfig | None = None,
        name: str = "feature",
        on_estimate: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = name
        self.cfg = cfg or FeatureConfig()
        self.on_estimate = on_estimate
        self.parts = target_parts(target, self.cfg.intermediate)
        self.device = self.parts.head.device
        torch.manual_seed(self.cfg.seed)
        self.net = FeatureDraftNet(self.parts.dims, self.parts.eps, self.parts.theta).to(self.device)
        with torch.no_grad():  # predicted features start at the target's scale
            self.net.norm.weight.copy_(self.parts.norm.float())
        self.counts = TokenCounts(
            self.parts.vocab, self.cfg.vocab_size, self.cfg.count_horizon, self.cfg.rerank_margin
        )
        self.vocab = vocab_map(self.counts.ids, self.parts.head, self.device)
        self.learner = FeatureLearner(copy.deepcopy(self.net), self.parts, self.cfg, self.vocab)
        self.learner.on_estimate = self._report
        self.net.eval().requires_grad_(False)
        self._served_version = 0
        self._sampling = SamplingParams()
        self._generator: torch.Generator | None = None
        self._reset_request([])
        self.trainer = Trainer(
            lambda: self.learner.step(), self.cfg, "feature_train_failure", "adaspec-feature-trainer", log
        )

    # -- serving -------------------------------------------------------------------------
    def _reset_request(self, prompt: Sequence[int]) -> None:
        hidden = self.parts.dims[0]
        self._prompt = [int(t) for t in prompt]
        self._feats = torch.zeros(max(16, len(prompt)), hidden, device=self.device)  # [capacity, H]
        self._nfeat = 0  # features known for positions 0.._nfeat-1
        self._kv: KV | None = None
        self._cached: list[int] = []  # tokens of the real (committed, exact-feature) steps in _kv

    def begin(self, request: RequestInfo) -> None:
        """Swap in the newest trained weights, count the prompt, re-rank the vocabulary if it moved."""
        self.serve_published()
        self.counts.add(request.prompt_ids)
        if self.counts.rerank():
            self.vocab = vocab_map(self.counts.ids, self.parts.head, self.device)
            self.learner.vocab = self.vocab
        self._sampling, self._generator = request.sampling, request.generator
        self._reset_request(request.prompt_ids)

    @torch.no_grad()
    def observe_features(self, start: int, hidden: torch.Tensor) -> None:
        """The target's features [n, H] at committed positions start..start+n-1 (rewrites allowed)."""
        if hidden.ndim != 2 or hidden.shape[1] != self.parts.dims[0]:
            raise ValueError(f"hidden must be [n, {self.parts.dims[0]}], got {tuple(hidden.shape)}")
        if not 0 <= start <= self._nfeat:
            raise ValueError(f"start {start} leaves a gap: features are known for positions < {self._nfeat}")
        end = start + hidden.shape[0]
        if end > self._feats.shape[0]:
            grown = torch.zeros(max(end, 2 * self._feats.shape[0]), self._feats.shape[1], device=self.device)
            grown[: self._nfeat] = self._feats[: self._nfeat]
            self._feats = grown
        self._feats[start:end] = hidden.to(self.device, torch.float32)
        if start < self._nfeat:  # step t reads f_{t-1}: steps after `start` are stale
            self._truncate(min(len(self._cached), start + 1))
        self._nfeat = max(self._nfeat, end)

    def _truncate(self, n: int) -> None:
        del self._cached[n:]
        if self._kv is not None:
            self._kv = (self._kv[0][:, :n], self._kv[1][:, :n])

    def _step(self, feats: torch.Tensor, tokens: Sequence[int], start: int) -> torch.Tensor:
        ids = torch.tensor(list(tokens), dtype=torch.long, device=self.device)  # [n]
        embeds = F.embedding(ids, self.parts.embed).float()  # [n, H]
        out: torch.Tensor
        out, self._kv = self.net(feats, embeds, start, self._kv)  # [n, H]
        return out

    @torch.no_grad()
    def propose(self, context: Sequence[int], max_tokens: int, stop: StopDrafting | None) -> Draft:
        """Draft up to max_tokens tokens continuing `context`, using features of positions < len - 1 only."""
        length = len(context)
        if max_tokens <= 0 or length == 0:
            return Draft(token_ids=(), probs=None, confidence=())
        real, n = self._resume(context)
        self._truncate(n)
        zero = torch.zeros(1, self.parts.dims[0], device=self.device)
        prev = torch.cat([zero, self._feats[: real - 1]])[n:real]  # [real - n, H]: f_{t-1}, steps n..real-1
        synced, behind = 0.0, catch_up_tokens(real - n)
        if behind:  # a long catch-up (the prompt): not a cost of the drafted tokens
            t0 = time.perf_counter()
            self._step(prev[:-1], context[n : real - 1], n)
            synced, prev, n0 = time.perf_counter() - t0, prev[-1:], real - 1
        else:
            n0 = n
        out = self._step(prev, context[n0:real], n0)[-1]  # [H]: predicted feature of position real-1
        self._cached.extend(int(t) for t in context[n:real])
        for t in range(real, length):  # committed tokens without exact features yet: feed predictions
            out = self._step(out[None], [context[t]], t)[0]
        tokens, confs, rows = self._draft(out, length, max_tokens, stop)
        self._truncate(real)  # drafted steps never stay in the cache
        probs = torch.stack(rows) if rows else None  # [k, vocab]
        confidence = tuple(confs)
        return Draft(tuple(tokens), probs, confidence, sync_seconds=synced, sync_tokens=behind)

    def _resume(self, context: Sequence[int]) -> tuple[int, int]:
        """(real, n): steps 0..real-1 of `context` read exact features; the first n are cached already."""
        real = min(self._nfeat + 1, len(context))
        n = min(len(self._cached), real - 1)  # feed at least the last real step
        if self._cached[:n] != list(context[:n]):  # not an extension of the cached steps
            n = next(i for i in range(n) if self._cached[i] != context[i])
        return real, n

    def behind(self, context: Sequence[int]) -> int:
        """Steps the next `propose(context)` would feed in a catch-up pass before drafting."""
        if not context:
            return 0
        real, n = self._resume(context)
        return catch_up_tokens(real - n)

    def _draft(
        self, out: torch.Tensor, length: int, max_tokens: int, stop: StopDrafting | None
    ) -> tuple[list[int], list[float], list[torch.Tensor]]:
        vocab, sampling = self.vocab, self._sampling
        tokens: list[int] = []
        confs: list[float] = []
        rows: list[torch.Tensor] = []
        for i in range(max_tokens):
            logits = out.float() @ vocab.head.T  # [Vd]
            token, conf, row = pick(logits, vocab, self.parts.vocab, sampling, self._generator, length + i)
            tokens.append(token)
            confs.append(conf)
            if row is not None:
                rows.append(row)
            if i + 1 == max_tokens or (stop is not None and stop(i, confs[-1])):
                break
            out = self._step(out[None], [tokens[-1]], length + i)[0]  # [H]
        return tokens, confs, rows

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Nothing to keep: the features given to `observe_features` carry the target's distributions."""

    def end(self, output_ids: Sequence[int]) -> None:
        """Count the output, turn the request's features into a training example, learn from it."""
        self.counts.add(output_ids)
        tokens = [*self._prompt, *(int(t) for t in output_ids)]
        ex = feature_example(
            tokens, self._feats[: self._nfeat], len(self._prompt), self.cfg.max_positions, self.device
        )
        if ex is None:
            return
        self.learner.add(ex)
        self.trainer.after_request()

    # -- offline training, evaluation, persistence --------------------------------------
    def count(self, token_sequences: Sequence[Sequence[int]]) -> None:
        """Count tokens toward the reduced vocabulary and re-rank it (between requests)."""
        for tokens in token_sequences:
            self.counts.add(tokens)
        if self.counts.rerank():
            self.vocab = vocab_map(self.counts.ids, self.parts.head, self.device)
            self.learner.vocab = self.vocab

    def pretrain(
        self,
        token_sequences: Sequence[Sequence[int]],
        feature_sequences: Sequence[torch.Tensor],
        steps: int,
        progress: Callable[[int, float], None] | None = None,
    ) -> float:
        """Train offline on sequences and their features [T_i, H]; serve the result; return the last loss."""
        if len(token_sequences) != len(feature_sequences) or not token_sequences:
            raise ValueError(
                f"need as many feature tensors ({len(feature_sequences)}) as token sequences "
                f"({len(token_sequences)}), at least one"
            )
        self.count(token_sequences)
        cap = self.cfg.max_positions
        examples = [
            feature_example(t, f, 0, cap, self.device)
            for t, f in zip(token_sequences, feature_sequences, strict=True)
        ]
        pool = [ex for ex in examples if ex is not None]
        loss = float("nan")
        for i in range(steps):
            loss = self.learner.train_on(self.learner.rng.sample(pool, min(len(pool), self.cfg.batch_size)))
            if progress is not None:
                progress(i + 1, loss)
        self.learner.publish()
        self.serve_published()
        return loss

    def serve_published(self) -> None:
        """Serve the learner's published weights now (between requests; `begin` does it for serving)."""
        version, weights = self.learner.snapshot()
        if weights is not None and version != self._served_version:
            with torch.no_grad():
                self.net.load_state_dict(weights)
            self._served_version = version

    def evaluate(self, token_ids: Sequence[int], features: torch.Tensor, gen_start: int = 1) -> float:
        """Teacher-forced top-1 agreement of the serving draft with the target's argmax over features
        [T, H] of token_ids, at the positions predicting token_ids[gen_start:] and after."""
        ex = feature_example(token_ids, features, gen_start, len(token_ids), self.device)
        return float("nan") if ex is None else self.learner.agreement(self.net, ex, self.vocab)

    def state_dict_for_save(self) -> dict[str, torch.Tensor]:
        """The newest trained weights, the vocabulary map and counts: flat, contiguous, no shared storage."""
        _, weights = self.learner.snapshot()
        out = {
            f"net.{k}": v.detach().cpu().contiguous().clone()
            for k, v in (weights or self.net.state_dict()).items()
        }
        out["vocab.ids"] = self.vocab.ids.cpu().clone()
        out["vocab.counts"] = self.counts.counts.clone()
        out["meta.dims"] = torch.tensor(self.parts.dims, dtype=torch.long)
        return out

    def load_saved(self, tensors: dict[str, torch.Tensor]) -> None:
        """Serve and train from saved tensors (call between requests); ValueError naming what does not fit."""
        dims = tensors.get("meta.dims")
        if dims is None or tuple(int(d) for d in dims.tolist()) != self.parts.dims:
            raise ValueError(
                f"saved meta.dims {None if dims is None else dims.tolist()} != draft dims {self.parts.dims}"
            )
        ids, counts = tensors.get("vocab.ids"), tensors.get("vocab.counts")
        vd = self.counts.size
        if ids is None or tuple(ids.shape) != (vd,) or len(torch.unique(ids)) != vd:
            raise ValueError(
                f"saved vocab.ids must hold {vd} distinct ids, got "
                f"{None if ids is None else tuple(ids.shape)}"
            )
        if int(ids.min()) < 0 or int(ids.max()) >= self.parts.vocab:
            raise ValueError(f"saved vocab.ids out of range [0, {self.parts.vocab})")
        if counts is None or tuple(counts.shape) != (self.parts.vocab,):
            raise ValueError(f"saved vocab.counts must have shape ({self.parts.vocab},)")
        weights = {k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("net.")}
        with torch.no_grad():
            self.net.load_state_dict(weights)  # strict: names and shapes must match
        self.learner.replace_weights(weights)
        self.counts.counts = counts.double().clone()
        self.counts.ids = ids.long().sort().values
        self.vocab = vocab_map(self.counts.ids, self.parts.head, self.device)
        self.learner.vocab = self.vocab
        self._served_version = self.learner.version

    @property
    def prequential_accuracy(self) -> float | None:
        """EMA of top-1 agreement with the target on requests before learning from them."""
        return self.learner.prequential_accuracy


def pretrain_feature_draft(
    proposer: FeatureProposer,
    token_sequences: Sequence[Sequence[int]],
    steps: int,
    progress: Callable[[int, float], None] | None = None,
) -> float:
    """Train `proposer` offline on token sequences, running its target for their features; return the loss."""
    feats = [target_features(proposer.parts.model, t) for t in token_sequences]  # [T_i, H] each
    return proposer.pretrain(token_sequences, feats, steps, progress)
