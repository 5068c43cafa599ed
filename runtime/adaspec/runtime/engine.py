"""The decoding loop: propose -> verify -> accept/rollback -> observe, and the plain baseline beside it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from adaspec.runtime.controller import Controller, ControllerConfig, CostModel, shared_prefix
from adaspec.runtime.cpukernels import TuningReport, tune_linears
from adaspec.runtime.models import CachedLM
from adaspec.runtime.proposers.adaptive import AdaptiveConfig
from adaspec.runtime.proposers.base import Draft, Proposer, RequestInfo
from adaspec.runtime.sampling import SamplingParams, gumbel_scores, logits_to_probs, sample
from adaspec.runtime.stats import GenerationStats, ProposerStats
from adaspec.runtime.verifystep import Branch, check

log = logging.getLogger("adaspec.engine")


class ProposerError(ValueError):
    """A proposer returned something verification cannot use."""


@dataclass(frozen=True)
class Step:
    """One verification: who drafted, how many tokens were verified and accepted, how many committed.

    The committed tokens are the `accepted` drafted ones, then one token of the target's own (the
    recovered one after a rejection, or the bonus after a fully accepted draft), cut at end-of-sequence.
    """

    speculator: str | None  # None: no draft this step; with a tree, the proposer whose branch went furthest
    drafted: int  # drafted tokens verified (a tree: its branches' lengths, shared nodes counted in each)
    accepted: int
    committed: int
    branches: int = 0  # drafts verified: 0 none, 1 a chain, more a token tree of that many branches


@dataclass(frozen=True)
class GenerationResult:
    """Generated token ids (prompt excluded), why generation stopped, its statistics and its steps."""

    token_ids: list[int]
    finish_reason: str  # "length", "stop" (an end-of-sequence token) or "cancelled" (by on_tokens)
    stats: GenerationStats
    steps: tuple[Step, ...] = ()


# Called with the tokens just committed (in order, after end-of-sequence trimming); True stops generation.
OnTokens = Callable[[Sequence[int]], bool]


def eos_ids(value: int | Iterable[int] | None) -> frozenset[int]:
    """The end-of-sequence ids in a config value (one id, a list of ids, or None)."""
    if value is None:
        return frozenset()
    if isinstance(value, int):
        return frozenset((value,))
    return frozenset(int(v) for v in value)


def validate_draft(draft: object, k_cap: int, vocab: int) -> Draft:
    """Return the draft if verification can use it, else raise ProposerError saying what is wrong."""
    if not isinstance(draft, Draft):
        raise ProposerError(f"expected a Draft, got {type(draft).__name__}")
    k = draft.k
    if k > k_cap:
        raise ProposerError(f"draft has {k} tokens, at most {k_cap} were asked for")
    if any(not isinstance(t, int) or not 0 <= t < vocab for t in draft.token_ids):
        raise ProposerError(f"draft token ids out of range [0, {vocab}): {draft.token_ids}")
    if len(draft.confidence) != k or any(not 0.0 <= c <= 1.0 for c in draft.confidence):
        raise ProposerError(f"confidence must hold {k} values in [0, 1], got {draft.confidence}")
    if not (isinstance(draft.sync_seconds, float | int) and 0.0 <= draft.sync_seconds < float("inf")):
        raise ProposerError(f"sync_seconds must be a finite number >= 0, got {draft.sync_seconds!r}")
    if not (isinstance(draft.sync_tokens, int) and draft.sync_tokens >= 0):
        raise ProposerError(f"sync_tokens must be an integer >= 0, got {draft.sync_tokens!r}")
    if draft.probs is not None:
        q = draft.probs
        if tuple(q.shape) != (k, vocab):
            raise ProposerError(f"draft probs have shape {tuple(q.shape)}, expected {(k, vocab)}")
        if k and (not bool(torch.isfinite(q).all()) or bool((q < 0).any())):
            raise ProposerError("draft probs contain NaN, infinite or negative values")
        if k and float((q.sum(-1) - 1.0).abs().max()) > 1e-3:
            raise ProposerError("draft probs rows do not sum to 1")
        if k and bool((q[torch.arange(k), list(draft.token_ids)] <= 0).any()):
            raise ProposerError("a drafted token has zero probability under its own proposal")
    return draft


class SpeculativeEngine:
    """Lossless speculative decoding of one target with any set of proposers under a controller.

    Proposers keep what they learn across `generate` calls (as in a server). With no proposers
    this is plain autoregressive decoding in the same loop.
    """

    def __init__(
        self,
        target: CachedLM,
        proposers: Sequence[Proposer],
        controller: Controller | None,
        eos_token_id: int | Iterable[int] | None = None,
    ) -> None:
        if proposers and controller is None:
            raise ValueError("proposers need a controller")
        self.target = target
        self.proposers = {p.name: p for p in proposers}
        self.controller = controller
        self.eos_token_ids = eos_ids(eos_token_id)  # every id that ends a sequence (Llama-3 has several)
        self.vocab = target.vocab_size
        self.totals = GenerationStats()  # across all requests served

    def replace_proposer(self, proposer: Proposer) -> None:
        """Serve `proposer` in place of the one with its name (call between requests only).

        The controller forgets what it learned about the old one's acceptance; the old one is closed.
        """
        old = self.proposers.get(proposer.name)
        self.proposers[proposer.name] = proposer
        if self.controller is not None:
            self.controller.forget(proposer.name)
        close = getattr(old, "close", None)
        if old is not None and old is not proposer and callable(close):
            close()

    # -- phases ------------------------------------------------------------------------
    def _draft(
        self, proposer: Proposer, context: list[int], k_cap: int, stats: GenerationStats
    ) -> tuple[Draft, float] | None:
        """Ask one proposer for a draft; return (draft, seconds its drafting took), or None if it failed.

        The proposer's catch-up on committed tokens (`Draft.sync_seconds`) is left out of the seconds: the
        controller values and prices drafted tokens, and that catch-up is paid whichever k it picks (it is
        priced before drafting instead: `Controller.plan`'s `behind`)."""
        assert self.controller is not None
        name = proposer.name
        mine = stats.per_speculator.setdefault(name, ProposerStats())
        mine.proposals += 1
        t0 = time.perf_counter()
        try:
            stop = self.controller.stopper(name, k_cap)
            draft = validate_draft(proposer.propose(context, k_cap, stop), k_cap, self.vocab)
        except Exception as exc:  # noqa: BLE001 - any proposer failure falls back to plain decoding
            mine.failures += 1
            mine.propose_seconds += time.perf_counter() - t0
            log.warning("event=proposer_failure proposer=%s error=%r", name, exc)
            return None
        seconds = time.perf_counter() - t0
        mine.propose_seconds += seconds
        mine.sync_seconds += draft.sync_seconds
        self.controller.costs.observe_sync(name, draft.sync_tokens, draft.sync_seconds)
        return draft, max(seconds - draft.sync_seconds, 0.0)

    def _propose(
        self,
        active: dict[str, Proposer],
        context: list[int],
        k_cap: int,
        stats: GenerationStats,
        trees: bool,
    ) -> tuple[list[Branch], list[Branch]]:
        """Propose phase: the controller says who drafts, in which order, and which drafts are verified
        (one chain, or with `trees` several as one token tree; none: decode without speculation).
        Returns (the branches to verify, the drafts made and not verified)."""
        if self.controller is None or not active:
            return [], []
        rnd = self.controller.round(active, k_cap, trees, self._behind(active, context, stats))
        drafts: dict[str, Draft] = {}
        while (plan := rnd.next()) is not None:
            got = self._draft(active[plan.proposer], context, rnd.k_cap, stats)
            if got is not None:
                drafts[plan.proposer] = got[0]
                rnd.offer(plan.proposer, got[0].confidence, got[0].match_length, got[1], got[0].token_ids)
        choice = rnd.choice()
        picked = dict([(choice.proposer, choice.k), *choice.also]) if choice is not None else {}
        verified = [Branch(name, drafts[name], k) for name, k in picked.items()]
        declined = [Branch(name, d, d.k) for name, d in drafts.items() if name not in picked and d.k]
        return verified, declined

    @staticmethod
    def _behind(active: dict[str, Proposer], context: list[int], stats: GenerationStats) -> dict[str, int]:
        """Tokens each model proposer must catch up on before it drafts (`behind`, where it has one); one
        whose count fails is counted as failing and priced as caught up (its draft then fails or not)."""
        out: dict[str, int] = {}
        for name, p in active.items():
            count = getattr(p, "behind", None)
            if not callable(count):
                continue
            try:
                out[name] = max(int(count(context)), 0)
            except Exception as exc:  # noqa: BLE001 - a speculator must never break generation
                stats.per_speculator.setdefault(name, ProposerStats()).failures += 1
                log.warning("event=proposer_failure proposer=%s error=%r", name, exc)
        return out

    # -- the loop ----------------------------------------------------------------------
    def generate(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        tag: str | None = None,
        on_tokens: OnTokens | None = None,
    ) -> GenerationResult:
        """Generate up to max_new_tokens tokens after prompt_ids; output equals the target's own decoding.

        `on_tokens` is called with every step's committed tokens (streaming); when it returns True,
        generation stops there with finish reason "cancelled".
        """
        sampling = sampling or SamplingParams()
        prompt = [int(t) for t in prompt_ids]
        _check_request(prompt, max_new_tokens, self.vocab, self.target.max_positions)
        gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
        stats = GenerationStats(per_speculator={n: ProposerStats() for n in self.proposers})
        request = RequestInfo(prompt_ids=tuple(prompt), tag=tag, sampling=sampling, generator=gen)
        active = dict(self.proposers)
        for pname, p in list(active.items()):
            if not _safe(partial(p.begin, request), pname, stats):
                del active[pname]

        readers = [p for p in active.values() if getattr(p, "needs_features", False)]
        t0 = time.perf_counter()
        self.target.reset()
        if len(prompt) > 1 and readers:
            _, features = self.target.feed_with_features(prompt[:-1], last=1)
            self._share_features(readers, active, 0, features, stats)
        elif len(prompt) > 1:
            self.target.feed(prompt[:-1], last=1)
        stats.prefill_seconds = time.perf_counter() - t0

        context = list(prompt)
        out: list[int] = []
        steps: list[Step] = []
        finish = "length"
        trees = sampling.greedy or (sampling.reproducible and sampling.seed is not None)
        t0 = time.perf_counter()
        while len(out) < max_new_tokens:
            # propose: at most remaining - 1 tokens, so that accepted + 1 never overshoots
            t_step = time.perf_counter()
            branches, declined = self._propose(active, context, max_new_tokens - len(out) - 1, stats, trees)
            t_verify = time.perf_counter()
            # verify, then accept / rollback: the target's cache keeps context + the accepted tokens
            checked = check(self.target, context, branches, sampling, gen, bool(readers))
            stats.propose_seconds += t_verify - t_step
            stats.verify_seconds += time.perf_counter() - t_verify
            stats.target_forward_passes += 1
            committed = checked.committed
            ends = [i for i, t in enumerate(committed) if t in self.eos_token_ids]
            if ends:
                committed = committed[: ends[0] + 1]
                finish = "stop"
            if readers and checked.hidden is not None:  # the pending and accepted tokens' features are exact
                self._share_features(readers, active, len(context) - 1, checked.hidden, stats)
            accepted = checked.committed[: checked.num_accepted]  # drafted tokens the target agreed with
            context.extend(committed)
            out.extend(committed)
            lead = max(branches, key=lambda b: shared_prefix(b.tokens, accepted), default=None)
            lead_name = lead.name if lead else None
            drafted = sum(b.k for b in branches)
            steps.append(Step(lead_name, drafted, checked.num_accepted, len(committed), len(branches)))
            # observe: each branch's proposer learns how far its own draft was accepted
            if self.controller is not None:
                if len(branches) > 1 and trees:
                    self.controller.costs.observe_tree(checked.verified + 1, checked.seconds)
                else:
                    self.controller.costs.observe_verify(checked.verified + 1, checked.seconds)
                for b in branches:
                    mine = shared_prefix(b.tokens, accepted)
                    self.controller.observe(b.name, b.draft.confidence[: b.k], b.draft.match_length, mine)
                    stats.per_speculator[b.name].record(b.k, mine)
                for b in declined:  # scored against what the target committed (point masses only)
                    if b.draft.probs is None:
                        d = b.draft
                        self.controller.observe_unverified(
                            b.name, d.token_ids, d.confidence, d.match_length, checked.committed
                        )
            rows = checked.logits[: len(committed)]  # [n_committed, vocab]
            for pname, p in list(active.items()):
                if not _safe(partial(p.observe, context, len(committed), rows), pname, stats):
                    del active[pname]
            if on_tokens is not None and on_tokens(committed) and finish != "stop":
                finish = "cancelled"
            if finish != "length":
                break
        stats.decode_seconds = time.perf_counter() - t0
        stats.generated_tokens = len(out)
        for pname, p in active.items():
            _safe(partial(p.end, out), pname, stats)
        self.totals.merge(stats)
        return GenerationResult(token_ids=out, finish_reason=finish, stats=stats, steps=tuple(steps))

    def _share_features(
        self,
        readers: list[Proposer],
        active: dict[str, Proposer],
        start: int,
        rows: torch.Tensor,
        stats: GenerationStats,
    ) -> None:
        """Give feature-reading proposers the target's features at committed positions start.. (one per
        row); one that fails is dropped for the rest of the request, as any failing proposer is."""
        for p in list(readers):
            observe = getattr(p, "observe_features", None)
            if not callable(observe) or not _safe(partial(observe, start, rows), p.name, stats):
                readers.remove(p)
                active.pop(p.name, None)


def _safe(call: Callable[[], None], name: str, stats: GenerationStats) -> bool:
    """Run a proposer lifecycle call; count and log a failure instead of raising."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - a speculator must never break generation
        stats.per_speculator.setdefault(name, ProposerStats()).failures += 1
        log.warning("event=proposer_failure proposer=%s error=%r", name, exc)
        return False
    return True


def _check_request(prompt: list[int], max_new_tokens: int, vocab: int, max_positions: int) -> None:
    if not prompt:
        raise ValueError("prompt is empty: at least one token is needed")
    if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"prompt token ids out of range [0, {vocab}): {bad[:5]}")
    if len(prompt) + max_new_tokens > max_positions:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the target's "
            f"{max_positions} positions"
        )


def autoregressive_generate(
    target: CachedLM,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    sampling: SamplingParams | None = None,
    eos_token_id: int | Iterable[int] | None = None,
) -> list[int]:
    """The plain baseline: one target pass per token, no speculation; returns generated ids."""
    sampling = sampling or SamplingParams()
    prompt = [int(t) for t in prompt_ids]
    _check_request(prompt, max_new_tokens, target.vocab_size, target.max_positions)
    gen = torch.Generator().manual_seed(sampling.seed) if sampling.seed is not None else None
    eos = eos_ids(eos_token_id)
    target.reset()
    logits = target.feed(prompt, last=1)  # [1, vocab]
    out: list[int] = []
    while len(out) < max_new_tokens:
        if sampling.greedy:
            token = int(logits[0].argmax())
        elif sampling.reproducible and sampling.seed is not None:
            p = logits_to_probs(logits, sampling)  # [1, vocab]
            token = int(gumbel_scores(p, sampling.seed, len(prompt) + len(out))[0].argmax())
        else:
            token = sample(logits_to_probs(logits, sampling)[0], gen)
        out.append(token)
        if token in eos or len(out) == max_new_tokens:
            break
        logits = target.feed([token])
    return out


def build_engine(
    target_dir: Path,
    static_draft_dir: Path | None = None,
    strategy: str = "hybrid",
    *,
    device: str = "cpu",
    fixed_k: int | None = None,
    controller: ControllerConfig | None = None,
    adaptive: AdaptiveConfig | None = None,
    adaptive_revision: Path | None = None,
    cpu_kernels: bool | TuningReport = True,
    disabled: Collection[str] = (),
    tokenizer_dir: Path | None = None,
    feature_draft_dir: Path | None = None,
) -> SpeculativeEngine:
    """Load the target (and static draft), build the strategy's proposers, measure costs; return the engine.

    `fixed_k` switches the controller to fixed lookahead (vLLM-style draft_model/ngram baselines).
    `adaptive_revision` starts the adaptive draft from a saved revision (checksums and tokenizer checked);
    otherwise it starts from the static draft, or from scratch without one.
    `cpu_kernels` picks, on CPU, the fastest matmul layout per layer shape and row count for the target
    and static draft (cpukernels.py); pass one TuningReport to engines compared side by side so that
    they run the same kernels (it is filled by the first). False keeps plain F.linear.
    `disabled` drops proposers from the strategy (the adaptive one when settings turn it off).
    `tokenizer_dir` holds the tokenizer revisions must match (default: the target's directory).
    `feature_draft_dir` (a `train-draft --arch feature` revision, checked as any revision) starts the
    `feature` proposer from an offline-trained draft; without it, it starts untrained.
    """
    from adaspec.runtime.artifacts import load_revision
    from adaspec.runtime.calibrate import measure_verify_seconds, proposer_step_seconds
    from adaspec.runtime.models import check_draft_compatible, load_causal_lm, tokenizer_fingerprint
    from adaspec.runtime.proposers.factory import BuildContext, build_proposer, proposers_for
    from adaspec.runtime.proposers.vocab import draft_counts

    names = tuple(n for n in proposers_for(strategy) if n not in disabled)
    if proposers_for(strategy) and not names:
        raise ValueError(f"strategy {strategy!r} runs no proposer once {sorted(disabled)} are disabled")
    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else Path(target_dir)
    target_model = load_causal_lm(Path(target_dir), "target", device)
    target = CachedLM(target_model, device)
    draft_model, static_counts, adaptive_counts = None, None, None
    if static_draft_dir is not None:
        draft_model = load_causal_lm(Path(static_draft_dir), "static draft", device)
        check_draft_compatible(
            Path(target_dir), Path(static_draft_dir), target.vocab_size, CachedLM(draft_model).vocab_size
        )
        static_counts = draft_counts(Path(static_draft_dir), target.vocab_size)
    elif "static" in names:
        raise ValueError(f"strategy {strategy!r} needs a static draft (--static-draft DIR)")
    if cpu_kernels is not False and device == "cpu":
        plan = cpu_kernels if isinstance(cpu_kernels, TuningReport) else TuningReport()
        for model in (target_model, draft_model):
            if model is not None:
                tune_linears(model, report=plan)
    init = None
    if adaptive_revision is not None:
        init, _ = load_revision(Path(adaptive_revision), tokenizer_fingerprint(tok_dir), device)
        adaptive_counts = draft_counts(Path(adaptive_revision), target.vocab_size)
    feature_init = None
    if feature_draft_dir is not None and "feature" in names:
        from adaspec.runtime.train_feature import load_feature_draft

        feature_init, _ = load_feature_draft(Path(feature_draft_dir), tokenizer_fingerprint(tok_dir))
    cfg = controller or ControllerConfig()
    if fixed_k is not None:
        cfg = replace(cfg, fixed_k=fixed_k, k_max=max(cfg.k_max, fixed_k))
    verify = measure_verify_seconds(target, range(1, cfg.k_max + 2)) if names else {1: 1.0}
    costs = CostModel(verify, {})
    ctl = Controller(cfg, costs)
    ctx = BuildContext(
        vocab_size=target.vocab_size,
        k_max=cfg.k_max,
        static_draft=draft_model,
        adaptive_init=init,
        static_counts=static_counts,
        adaptive_counts=adaptive_counts,
        static_draft_dir=static_draft_dir,
        adaptive=adaptive,
        device=device,
        max_positions=target.max_positions,
        on_estimate=ctl.set_prior,
        target=target_model,
        feature_init=feature_init,
    )
    proposers = [build_proposer(n, ctx) for n in names]
    for p in proposers:
        step = proposer_step_seconds(p)
        if step is not None:
            costs.draft[p.name] = step
    eos = set(eos_ids(getattr(target_model.config, "eos_token_id", None)))
    generation = getattr(target_model, "generation_config", None)
    eos |= eos_ids(getattr(generation, "eos_token_id", None))
    return SpeculativeEngine(target, proposers, ctl if names else None, eos)
