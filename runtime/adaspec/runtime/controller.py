"""Confidence-aware controller: which proposer drafts, and how far ahead, at every step.

It maximises expected tokens per second, E[accepted + 1] / (t_draft(k) + t_verify(k + 1))
(Leviathan et al., arXiv 2211.17192, eq. for wall-clock speed-up), with acceptance estimated online
per proposer, draft position and confidence bucket, and costs from a measured, online-updated cost
model. Drafting stops once the probability that every drafted token is accepted falls below a
threshold (SpecDec++, arXiv 2405.19715, shows the optimal stopping rule is a threshold rule).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from adaspec.runtime.settings import ControllerSettings

_DEFAULTS = ControllerSettings()  # the one set of defaults (also the CRD's)
CONF_EDGES = (0.2, 0.4, 0.6, 0.8, 0.95)  # confidence buckets: 6
# suffix match-length buckets: 7 (0 for model drafters); a 20-token match (a copied block) is accepted far
# more often than an 8-token one, so deep matches get buckets of their own
LEN_EDGES = (3, 5, 8, 12, 16, 24)
MAX_POS_BUCKET = 7
DRAFT_WARMUP = 8  # drafts per proposer whose fastest per-token cost is the estimate (CostModel.observe_draft)
DRAFT_SPIKE = 4.0  # one later draft moves the estimate toward at most this many times it


@dataclass(frozen=True)
class ControllerConfig:
    """Controller settings (the CRD's controller.* fields map here)."""

    k_max: int = _DEFAULTS.max_lookahead  # maximum lookahead
    k_min: int = _DEFAULTS.min_lookahead  # minimum lookahead whenever a proposer is available
    # stop drafting below this cumulative acceptance probability
    confidence_threshold: float = _DEFAULTS.confidence_threshold
    exploration: float = _DEFAULTS.exploration  # probability of trying a proposer that is not the best
    prior_acceptance: float = 0.5
    prior_strength: float = 6.0  # pseudo-observations behind every estimate
    decay: float = 0.995  # forgetting per observed draft token (tracks drift)
    fixed_k: int | None = None  # fixed-lookahead mode (vLLM style): always k tokens, no stopping
    # a proposer is "cheap" when drafting k_max tokens costs less than this share of a target pass: it
    # drafts every step, before any model draft is considered (a model draft drafts at most once a step)
    cheap_fraction: float = 0.05
    # most draft nodes one tree verification may hold when two proposers' drafts disagree (0: chains only)
    max_tree_nodes: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.k_min <= self.k_max:
            raise ValueError(f"need 0 <= k_min <= k_max, got k_min={self.k_min}, k_max={self.k_max}")
        if self.k_max > 64:
            raise ValueError(f"k_max must be <= 64, got {self.k_max}")
        if not 0.0 <= self.confidence_threshold < 1.0:
            raise ValueError(f"confidence_threshold must be in [0, 1), got {self.confidence_threshold!r}")
        if self.fixed_k is not None and not 1 <= self.fixed_k <= 64:
            raise ValueError(f"fixed_k must be in 1..64, got {self.fixed_k!r}")
        if not 0.0 <= self.cheap_fraction <= 1.0:
            raise ValueError(f"cheap_fraction must be in [0, 1], got {self.cheap_fraction!r}")
        if not 0 <= self.max_tree_nodes <= 256:
            raise ValueError(f"max_tree_nodes must be in 0..256, got {self.max_tree_nodes!r}")


def expected_tokens(accept_probs: Sequence[float]) -> float:
    """Expected tokens per target pass when drafting tokens with these conditional acceptance probabilities.

    E = 1 + sum_i prod_{j<=i} p_j (the +1 is the target's own recovered or bonus token).
    """
    e, cum = 1.0, 1.0
    for p in accept_probs:
        cum *= p
        e += cum
    return e


def tree_expected_tokens(a: Sequence[float], b: Sequence[float], shared: int) -> float:
    """Expected tokens per pass of verifying two chains as one tree: conditional acceptance probabilities
    `a` and `b` along each, equal tokens on their first `shared` positions and different after.

    Where the chains agree they are one path; where they part, the target's token can match at most one
    of them, so the chance that some path reaches position i is the sum of the two (never above the
    chance of reaching the fork). On a chain (b empty) this is `expected_tokens`.
    """
    e, ca, cb, fork = 1.0, 1.0, 1.0, 1.0
    for i in range(max(len(a), len(b))):
        ca = ca * a[i] if i < len(a) else 0.0
        cb = cb * b[i] if i < len(b) else 0.0
        if i < shared:
            fork = max(ca, cb)
            e += fork
        else:
            e += min(ca + cb, fork)
    return e


def best_lookahead(
    accept_probs: Sequence[float], t_draft: Callable[[int], float], t_verify: Callable[[int], float]
) -> tuple[int, float]:
    """Return (k, tokens per second) maximising expected throughput over k = 0..len(accept_probs)."""
    best_k, best_v = 0, 1.0 / t_verify(1)
    e, cum = 1.0, 1.0
    for k, p in enumerate(accept_probs, start=1):
        cum *= p
        e += cum
        v = e / (t_draft(k) + t_verify(k + 1))
        if v > best_v:
            best_k, best_v = k, v
    return best_k, best_v


def _bucket(x: float, edges: Sequence[float]) -> int:
    return bisect.bisect_right(edges, x)


class AcceptanceTable:
    """Online acceptance estimates with exponential forgetting and hierarchical shrinkage.

    Levels: proposer (root, shrunk to its prior), (proposer, position), (proposer, confidence,
    match length), and the cell (proposer, position, confidence, match length) shrunk towards the
    confidence level. Counts decay by `decay` per observed token, so estimates follow drift.
    """

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self._counts: dict[tuple[object, ...], list[float]] = {}  # key -> [accepted, trials, t]
        self._t = 0
        self.priors: dict[str, float] = {}

    def forget(self, name: str) -> None:
        """Drop every estimate of one proposer (its model was replaced)."""
        self._counts = {k: v for k, v in self._counts.items() if k[0] != name}
        self.priors.pop(name, None)

    def _get(self, key: tuple[object, ...]) -> tuple[float, float]:
        c = self._counts.get(key)
        if c is None:
            return 0.0, 0.0
        f = self.cfg.decay ** (self._t - c[2])
        return c[0] * f, c[1] * f

    def _add(self, key: tuple[object, ...], accepted: bool) -> None:
        a, n = self._get(key)
        self._counts[key] = [a + float(accepted), n + 1.0, float(self._t)]

    def _shrink(self, key: tuple[object, ...], parent: float) -> float:
        a, n = self._get(key)
        s = self.cfg.prior_strength
        return (a + s * parent) / (n + s)

    def root(self, name: str) -> float:
        """Overall acceptance estimate of a proposer."""
        return self._shrink((name,), self.priors.get(name, self.cfg.prior_acceptance))

    def p_position(self, name: str, pos: int) -> float:
        """Acceptance estimate of the token at draft position `pos`, before its confidence is known."""
        return self._shrink((name, "pos", min(pos, MAX_POS_BUCKET)), self.root(name))

    def p_token(self, name: str, pos: int, confidence: float, match_len: int = 0) -> float:
        """Acceptance estimate of a drafted token given its position, confidence and match length."""
        cb, lb = _bucket(confidence, CONF_EDGES), _bucket(match_len, LEN_EDGES)
        conf_level = self._shrink((name, "conf", cb, lb), self.root(name))
        return self._shrink((name, "cell", min(pos, MAX_POS_BUCKET), cb, lb), conf_level)

    def update(self, name: str, confidences: Sequence[float], match_len: int, num_accepted: int) -> None:
        """Record a verification: tokens before `num_accepted` accepted, the next one rejected."""
        lb = _bucket(match_len, LEN_EDGES)
        for pos, conf in enumerate(confidences[: num_accepted + 1]):
            self._t += 1
            ok = pos < num_accepted
            cb = _bucket(conf, CONF_EDGES)
            p = min(pos, MAX_POS_BUCKET)
            for key in ((name,), (name, "pos", p), (name, "conf", cb, lb), (name, "cell", p, cb, lb)):
                self._add(key, ok)


class CostModel:
    """Seconds per target pass by number of tokens verified, and per drafted token by proposer.

    Seeded by start-up measurements, then updated with an exponential moving average of what
    serving observes. Verify costs between measured sizes are interpolated linearly.
    """

    def __init__(self, verify_seconds: dict[int, float], draft_seconds_per_token: dict[str, float]) -> None:
        if 1 not in verify_seconds:
            raise ValueError("verify_seconds needs a measurement for 1 token")
        self.verify = dict(verify_seconds)
        self.draft = dict(draft_seconds_per_token)
        self._draft_seen: dict[str, int] = {}  # drafts observed per proposer
        self.sync: dict[str, float] = {}  # per token, a catch-up pass's seconds beyond one draft step
        self.alpha = 0.05
        # a tree pass over q tokens costs this times a chain pass over q (its mask is not causal): measured
        self.tree_overhead = 1.0

    def t_verify(self, q: int) -> float:
        """Seconds for one target pass over q tokens."""
        if q in self.verify:
            return self.verify[q]
        sizes = sorted(self.verify)
        i = bisect.bisect_left(sizes, q)
        if i == 0:
            return self.verify[sizes[0]]
        if i == len(sizes):  # extrapolate with the last slope
            if len(sizes) == 1:
                return self.verify[sizes[0]]
            a, b = sizes[-2], sizes[-1]
            slope = (self.verify[b] - self.verify[a]) / (b - a)
            return self.verify[b] + slope * (q - b)
        a, b = sizes[i - 1], sizes[i]
        w = (q - a) / (b - a)
        return self.verify[a] * (1 - w) + self.verify[b] * w

    def t_tree(self, q: int) -> float:
        """Seconds for one target pass over a tree of q tokens (the pending one included)."""
        return self.tree_overhead * self.t_verify(q)

    def observe_tree(self, q: int, seconds: float) -> None:
        """Fold in a measured tree pass: its cost relative to a chain pass of the same size, clamped to
        [0.5, 4] (one pass stalled by a neighbour on a shared CPU must not switch trees off for good)."""
        ratio = min(max(seconds / max(self.t_verify(q), 1e-9), 0.5), 4.0)
        self.tree_overhead += 2 * self.alpha * (ratio - self.tree_overhead)

    def t_draft(self, name: str, k: int) -> float:
        """Seconds to draft k tokens with a proposer."""
        return self.draft.get(name, 0.0) * k

    def t_sync(self, name: str, tokens: int) -> float:
        """Seconds for a proposer's catch-up pass over `tokens` committed tokens: what any pass of it costs
        (one draft step) plus a learned cost per token (0 before a catch-up was seen)."""
        if tokens <= 0:
            return 0.0
        return self.t_draft(name, 1) + self.sync.get(name, 0.0) * tokens

    def observe_sync(self, name: str, tokens: int, seconds: float) -> None:
        """Fold in a measured catch-up pass: its seconds beyond one draft step, per token; the first sets the
        estimate, later ones move an average, each clipped to `DRAFT_SPIKE` times it (a stall must not price
        a proposer out). A catch-up on the prompt of SmolLM2's static draft took about 53 ms for 300 tokens
        (nearly a target step), one on 9 tokens 6 ms."""
        if tokens <= 0:
            return
        per, old = max(seconds - self.t_draft(name, 1), 0.0) / tokens, self.sync.get(name)
        if old is None or old <= 0.0:
            self.sync[name] = per
        else:
            self.sync[name] = old + 4 * self.alpha * (min(per, DRAFT_SPIKE * old) - old)

    def observe_verify(self, q: int, seconds: float) -> None:
        """Fold in a measured target pass (a chain). The tree overhead drifts back toward parity meanwhile,
        so trees that stopped paying are tried again once in a while rather than never."""
        old = self.t_verify(q)
        self.verify[q] = old + self.alpha * (seconds - old)
        self.tree_overhead += 0.1 * self.alpha * (1.0 - self.tree_overhead)

    def observe_draft(self, name: str, k: int, seconds: float) -> None:
        """Fold in a measured draft of k tokens, robustly: the first `DRAFT_WARMUP` drafts keep the fastest
        per-token cost seen (as calibration keeps the fastest of its repetitions), later ones move an EMA,
        each clipped to `DRAFT_SPIKE` times the estimate. In one quick drift run a suffix proposer without a
        calibrated prior ended at 2.4 target steps per token (0.002 in the hybrids of the same run): the
        first draft's cost was the estimate, a stall (a garbage collection, a neighbour on the CPU) made it
        "not cheap", it was then drafted only when exploring, and each exploration moved the estimate 5%
        back. A sustained rise is still followed, by up to `DRAFT_SPIKE` times per sample."""
        if k <= 0:
            return
        old = self.draft.get(name)
        per = seconds / k
        seen = self._draft_seen.get(name, 0) + 1
        self._draft_seen[name] = seen
        if old is None:
            self.draft[name] = per
        elif seen <= DRAFT_WARMUP:
            self.draft[name] = min(old, per)
        else:
            self.draft[name] = old + self.alpha * (min(per, DRAFT_SPIKE * old) - old)


@dataclass(frozen=True)
class Plan:
    """What the controller expects of a proposer before it drafts."""

    proposer: str
    k: int  # 0: this proposer is not worth drafting with now
    tokens_per_second: float


@dataclass(frozen=True)
class Choice:
    """The draft a propose round settled on: verify the first `k` tokens of `proposer`'s draft, and with
    them, as one token tree, the first k' tokens of each (proposer, k') in `also`."""

    proposer: str
    k: int
    tokens_per_second: float
    also: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Offer:
    """A finished draft as the controller valued it."""

    proposer: str
    k: int  # the prefix worth verifying alone
    tokens: tuple[int, ...]
    accept: tuple[float, ...]  # estimated conditional acceptance of each drafted token
    seconds: float


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token sequences."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class ProposeRound:
    """One step's propose phase, decided by the controller and executed by the engine.

    The engine asks `next()` which proposer drafts next, drafts with it, and reports the finished draft
    with `offer` (or `failed`); `choice()` then names the draft to verify, or None (plain decoding).
    The order: proposers ranked by planned throughput; cheap ones (see ControllerConfig.cheap_fraction)
    draft every step, first; then at most one model draft, and only when its plan beats the best draft
    already in hand. Fixed-lookahead mode takes the first proposer that yields a draft.
    """

    def __init__(
        self,
        ctl: Controller,
        names: Iterable[str],
        k_cap: int,
        trees: bool = False,
        behind: Mapping[str, int] | None = None,
    ) -> None:
        self.ctl = ctl
        self.trees = trees and ctl.cfg.max_tree_nodes > 0 and ctl.cfg.fixed_k is None
        self._offers: list[Offer] = []
        self.k_cap = min(k_cap, ctl.cfg.fixed_k or ctl.cfg.k_max)
        names = list(names)
        plans = ctl.rank(names, self.k_cap, behind) if self.k_cap > 0 and names else []
        cheap = {p.proposer: ctl.is_cheap(p.proposer) for p in plans}
        plans.sort(key=lambda p: not cheap[p.proposer])  # stable: cheap first, each group by rank
        self._plans = plans
        self._cheap = cheap
        self._fixed = ctl.cfg.fixed_k is not None
        self._model_drafted = False
        self._best: Choice | None = None

    def next(self) -> Plan | None:
        """The next proposer to draft with, or None when the round is over."""
        while self._plans:
            plan = self._plans.pop(0)
            if self._fixed:
                if self._best is not None:
                    return None
                return plan
            if self._cheap[plan.proposer]:
                return plan
            best = self._best.tokens_per_second if self._best is not None else 0.0
            if not self._model_drafted and plan.k > 0 and plan.tokens_per_second > best:
                self._model_drafted = True
                return plan
        return None

    def offer(
        self,
        name: str,
        confidences: Sequence[float],
        match_len: int,
        draft_seconds: float,
        tokens: Sequence[int] = (),
    ) -> None:
        """A finished draft of len(confidences) tokens that took `draft_seconds`: learn its cost, value it.
        Its `tokens` let `choice` verify it beside another draft as a tree."""
        self.ctl.costs.observe_draft(name, len(confidences), draft_seconds)
        if not confidences:
            return
        k, value = self.ctl.choose_k(name, confidences, match_len, draft_seconds)
        if len(tokens) == len(confidences):
            accept = tuple(self.ctl.table.p_token(name, i, c, match_len) for i, c in enumerate(confidences))
            self._offers.append(Offer(name, k, tuple(int(t) for t in tokens), accept, draft_seconds))
        if self._best is None or value > self._best.tokens_per_second:
            self._best = Choice(name, k, value)

    def choice(self) -> Choice | None:
        """The draft to verify (k >= 1), or None: decode this step without speculation.

        With trees allowed and two drafts in hand that part ways, both go into one verification when the
        expected tokens of the tree (`tree_expected_tokens`) over its measured cost (`CostModel.t_tree`)
        beat the best draft alone; all drafting this step is paid whichever is verified.
        """
        best = self._best
        if best is None or best.k <= 0:
            return None
        return self._tree(best) if self.trees and len(self._offers) > 1 else best

    def _tree(self, best: Choice) -> Choice:
        costs, cap = self.ctl.costs, self.ctl.cfg.max_tree_nodes
        lead = next((o for o in self._offers if o.proposer == best.proposer), None)
        if lead is None:
            return best
        spent = sum(o.seconds for o in self._offers)
        a = lead.accept[: best.k]
        value = expected_tokens(a) / (spent + costs.t_verify(best.k + 1))
        chosen = best
        for other in self._offers:
            if other is lead or other.k <= 0:
                continue
            shared = shared_prefix(lead.tokens[: best.k], other.tokens[: other.k])
            k = min(other.k, cap - best.k + shared)
            if k <= shared:  # inside the lead's branch, or no room left: nothing new to verify
                continue
            nodes = best.k + k - shared
            v = tree_expected_tokens(a, other.accept[:k], shared) / (spent + costs.t_tree(nodes + 1))
            if v > value:
                value, chosen = v, Choice(best.proposer, best.k, v, ((other.proposer, k),))
        return chosen


def controller_config(settings: ControllerSettings) -> ControllerConfig:
    """The controller configuration a settings file's `controller` section asks for."""
    return ControllerConfig(
        k_max=settings.max_lookahead,
        k_min=settings.min_lookahead,
        confidence_threshold=settings.confidence_threshold,
        exploration=settings.exploration,
    )


class Controller:
    """Chooses the proposer and lookahead per step and learns from every verification."""

    def __init__(self, cfg: ControllerConfig, costs: CostModel) -> None:
        self.cfg = cfg
        self.costs = costs
        self.table = AcceptanceTable(cfg)
        self.rng = random.Random(cfg.seed)

    def forget(self, name: str) -> None:
        """Forget what was learned about a proposer's acceptance (a new model now drafts under its name)."""
        self.table.forget(name)

    def set_prior(self, name: str, acceptance: float) -> None:
        """Set a proposer's prior acceptance (e.g. an adaptive draft's prequential accuracy)."""
        self.table.priors[name] = min(max(acceptance, 0.01), 0.99)

    def plan(self, name: str, k_cap: int, behind: int = 0) -> Plan:
        """Best lookahead for a proposer from position-level estimates, before drafting.

        `behind`: committed tokens it must first catch up on in a pass of its own (the prompt, on a model
        draft's first draft of a request): that pass is paid only if it drafts, so drafting is valued with
        it. On a 2-core CPU the static draft's catch-up on a 300-token prompt costs about a target step,
        and in the quick drift run the hybrid's model drafts spent 1.9 ms of every target pass (of 4.8 ms
        proposing) catching up on Go, for 4 accepted tokens in 8 requests.
        """
        if self.cfg.fixed_k is not None:
            k = min(self.cfg.fixed_k, k_cap)
            return Plan(name, k, float("inf"))
        ps = [self.table.p_position(name, i) for i in range(min(self.cfg.k_max, k_cap))]
        sync = self.costs.t_sync(name, behind)

        def t_draft(n: int) -> float:
            return sync + self.costs.t_draft(name, n)

        k, v = best_lookahead(ps, t_draft, self.costs.t_verify)
        if k < self.cfg.k_min <= len(ps):
            k = self.cfg.k_min
            v = expected_tokens(ps[:k]) / (t_draft(k) + self.costs.t_verify(k + 1))
        return Plan(name, k, v)

    def rank(self, names: Iterable[str], k_cap: int, behind: Mapping[str, int] | None = None) -> list[Plan]:
        """Plans for every proposer, best first.

        With probability `exploration` a random proposer leads with at least one token, so estimates
        of proposers (or lookaheads) that look unprofitable keep being refreshed instead of freezing.
        """
        behind = behind or {}
        plans = [self.plan(n, k_cap, behind.get(n, 0)) for n in names]
        plans.sort(key=lambda p: -p.tokens_per_second)
        if plans and self.cfg.fixed_k is None and k_cap > 0 and self.rng.random() < self.cfg.exploration:
            chosen = plans.pop(self.rng.randrange(len(plans)))
            lead = plans[0].tokens_per_second if plans else chosen.tokens_per_second
            plans.insert(0, Plan(chosen.proposer, max(chosen.k, 1), max(lead, chosen.tokens_per_second)))
        return plans

    def plain_tokens_per_second(self) -> float:
        """Throughput of decoding without speculation."""
        return 1.0 / self.costs.t_verify(1)

    def is_cheap(self, name: str) -> bool:
        """Whether drafting k_max tokens with a proposer costs under `cheap_fraction` of a target pass."""
        return self.costs.t_draft(name, self.cfg.k_max) < self.cfg.cheap_fraction * self.costs.t_verify(1)

    def round(
        self, names: Iterable[str], k_cap: int, trees: bool = False, behind: Mapping[str, int] | None = None
    ) -> ProposeRound:
        """The propose phase of one step over these proposers (see ProposeRound); `trees`: the step's
        verification can take a token tree (greedy or seeded sampling); `behind`: tokens each model
        proposer would catch up on before drafting (see `plan`)."""
        return ProposeRound(self, names, k_cap, trees, behind)

    def stopper(self, name: str, k_cap: int, match_len: int = 0) -> Callable[[int, float], bool]:
        """A callback for Proposer.propose: stop once cumulative acceptance falls below the threshold.

        A cheap proposer (see `is_cheap`) drafts to the cap: its tokens cost next to nothing, and
        `choose_k` then verifies the prefix that pays, from the whole draft's confidences (stopping it
        at the threshold cut long suffix matches short: 2.02 against 2.21 tokens per pass on Python in
        `bench replay` of the full drift run, with the same proposer).
        """
        if self.cfg.fixed_k is not None or self.is_cheap(name):
            return lambda pos, conf: pos + 1 >= k_cap
        cum = [1.0]

        def stop(pos: int, confidence: float) -> bool:
            cum[0] *= self.table.p_token(name, pos, confidence, match_len)
            return cum[0] < self.cfg.confidence_threshold or pos + 1 >= k_cap

        return stop

    def choose_k(
        self, name: str, confidences: Sequence[float], match_len: int, draft_seconds: float
    ) -> tuple[int, float]:
        """Return (k, tokens/s): the prefix of a finished draft worth verifying; k = 0 declines it.

        Drafting time is already spent, so it is added to every option, k = 0 included. A draft whose
        tokens do not pay for the longer target pass is declined: on a 2-core CPU a pass over 2 tokens
        costs 1.1-1.2x a pass over one, and verifying every paid-for draft for at least one token, as
        this did, kept the static draft at 14% acceptance on Go drafting and verifying every step (0.92x
        target-only tokens/s). A declined point-mass draft is still scored against the target's token
        (`observe_unverified`), and a declined draft is verified for one token with probability
        `exploration` (a sampled draft's acceptance is known only from verification), so the estimates of
        a proposer whose drafts are declined still move.
        """
        n = len(confidences)
        if self.cfg.fixed_k is not None:
            return n, float("inf")
        ps = [self.table.p_token(name, i, c, match_len) for i, c in enumerate(confidences)]
        # the draft is paid for whichever k is verified, k = 0 included: it belongs with the verification
        # of every option, once (e / (d + t_verify(k + 1))), not also as a per-k drafting cost
        k, v = best_lookahead(ps, lambda _k: 0.0, lambda q: draft_seconds + self.costs.t_verify(q))
        floor = min(self.cfg.k_min, n)
        if k == 0 < n and self.rng.random() < self.cfg.exploration:
            floor = max(floor, 1)
        if k < floor:
            k = floor
            v = expected_tokens(ps[:k]) / (draft_seconds + self.costs.t_verify(k + 1))
        return k, v

    def observe_unverified(
        self,
        name: str,
        tokens: Sequence[int],
        confidences: Sequence[float],
        match_len: int,
        target: Sequence[int],
    ) -> None:
        """Learn from a point-mass draft that was not verified, against the tokens the target committed in
        its place: its token at a position is accepted exactly when it equals the target's there (greedy,
        seeded sampling), or with the probability the target gives it (sampling), which a match with the
        target's sampled token has too. Positions past the committed tokens are not known, and are not
        scored."""
        seen = min(len(tokens), len(confidences), len(target))
        if seen:
            self.table.update(name, confidences[:seen], match_len, shared_prefix(tokens[:seen], target))

    def observe(self, name: str, confidences: Sequence[float], match_len: int, num_accepted: int) -> None:
        """Learn from one verification of a draft."""
        self.table.update(name, confidences, match_len, num_accepted)
