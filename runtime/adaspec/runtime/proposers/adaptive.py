"""`adaptive`: a small draft model distilled online toward the target from the traffic it serves.

Online Speculative Decoding (Liu et al., arXiv 2310.07177): keep a buffer of served requests with
the target's distributions at the generated positions, and periodically update the draft by
distillation (cross-entropy to the target's top-k distribution, i.e. forward KL up to a constant).
Prompt tokens, which the target did not generate, are used with a small weight as plain language
modelling so that a new language is picked up quickly. Training runs in a background thread with a
bounded compute share on a separate copy of the weights; the serving copy swaps weights only
between requests, so a request always drafts with one consistent model.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from adaspec.runtime.artifacts import Manifest, save_revision
from adaspec.runtime.models import CachedLM
from adaspec.runtime.proposers.base import RequestInfo
from adaspec.runtime.proposers.static import DraftModelProposer
from adaspec.runtime.settings import AdaptiveSettings

_DEFAULTS = AdaptiveSettings()  # the one set of defaults (also the CRD's)

log = logging.getLogger("adaspec.adaptive")


@dataclass(frozen=True)
class AdaptiveConfig:
    """Online learning settings."""

    lr: float = _DEFAULTS.learning_rate
    soft_top_k: int = 8  # target logits kept per generated position
    prompt_weight: float = 0.3  # weight of plain LM loss on prompt tokens (0 disables)
    max_context: int = 384  # prompt tokens kept per example
    buffer_size: int = _DEFAULTS.buffer_size  # examples kept for replay
    batch_size: int = _DEFAULTS.batch_size
    steps_per_request: int = _DEFAULTS.steps_per_request  # optimisation steps per served request
    background: bool = False  # train in a worker thread (serving) or inline at request end (tests)
    compute_share: float = _DEFAULTS.compute_share  # background: fraction of wall time the worker may train
    prompt_positions: int = 64  # prompt positions sampled per example for the LM loss (0: all)
    # Train the token embeddings and output head too? None: only when they are a small part of the
    # draft. A draft cut from its target (train-draft's recipe) carries the target's 49k x 576 tables:
    # 80% of its parameters, frozen in the recipe, and updating them online would cost most of each
    # step (gradients, AdamW state, snapshots) for little gain.
    train_embeddings: bool | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.compute_share <= 1.0:
            raise ValueError(f"compute_share must be in (0, 1], got {self.compute_share!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


@dataclass(frozen=True)
class Example:
    """One served request, ready for distillation."""

    tokens: torch.Tensor  # [T] long: prompt tail + generated tokens
    gen_start: int  # index in `tokens` of the first generated token
    top_ids: torch.Tensor  # [T - gen_start, K] long: target's top-k ids at each generated position
    top_logp: torch.Tensor  # [T - gen_start, K] float: their log-probabilities

    def to(self, device: torch.device) -> Example:
        """This example with its tensors on `device` (the training model's)."""
        tokens, ids, logp = self.tokens.to(device), self.top_ids.to(device), self.top_logp.to(device)
        return Example(tokens, self.gen_start, ids, logp)


def is_table(name: str) -> bool:
    """Whether a parameter is the token embedding or the output head."""
    return "embed_tokens" in name or "lm_head" in name


def adaptive_config(settings: AdaptiveSettings, *, background: bool) -> AdaptiveConfig:
    """The online-learning configuration a settings file's `adaptive` section asks for."""
    return AdaptiveConfig(
        lr=settings.learning_rate,
        buffer_size=settings.buffer_size,
        batch_size=settings.batch_size,
        steps_per_request=settings.steps_per_request,
        compute_share=settings.compute_share,
        background=background,
    )


def freeze_tables_if_dominant(model: Any, train_embeddings: bool | None = None) -> dict[str, Any]:
    """Mark which parameters train: the embeddings and head only when they are at most half the model
    (or as `train_embeddings` says); return the trained parameters by name."""
    if train_embeddings is None:
        total = sum(p.numel() for p in model.parameters())
        tables = sum(p.numel() for n, p in model.named_parameters() if is_table(n))
        train_embeddings = tables <= total // 2
    for name, param in model.named_parameters():
        param.requires_grad_(train_embeddings or not is_table(name))
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


GATE_LOOKAHEAD = 4  # drafted tokens per chain when the gate scores weights
GATE_WINDOW = 3  # unseen requests in a row the training weights must be ahead on to be published


def chain_lengths(hits: torch.Tensor, k: int = GATE_LOOKAHEAD) -> torch.Tensor:
    """Tokens a chain of k drafted tokens starting at each position would have had accepted: [G] float.

    `hits[i]` says whether the draft predicts token i given the tokens before it (teacher-forced on the
    target's own tokens, which is what a draft sees while its chain is being accepted)."""
    return chain_lengths_by_depth([hits] * k)


def chain_lengths_by_depth(passes: Sequence[torch.Tensor]) -> torch.Tensor:
    """`chain_lengths` where the chain's j-th token is judged by its own hits: `passes[j][i]` says whether
    the j-th drafted token, at position i, is the target's (a feature draft's step j reads predicted
    features, so each depth has its own hits). [G] float."""
    out = torch.zeros_like(passes[0], dtype=torch.float32) if passes else torch.zeros(0)
    run = torch.ones_like(out)
    for j, h in enumerate(passes):
        shifted = torch.zeros_like(out)
        shifted[: len(out) - j] = h[j:].float()
        run = run * shifted
        out = out + run
    return out


class OnlineDistiller:
    """Holds the training copy of the draft, the replay buffer, and the optimisation loop.

    `add` may be called from the serving thread; `step` runs on whichever thread trains (the
    worker, or the serving thread in inline mode) and is the only user of the training model.
    """

    def __init__(self, model: Any, cfg: AdaptiveConfig, on_estimate: Callable[[float], None] | None) -> None:
        self.cfg = cfg
        self.model = model.train()
        self.trained = freeze_tables_if_dominant(model, cfg.train_embeddings)
        self.opt = torch.optim.AdamW(self.trained.values(), lr=cfg.lr, weight_decay=0.0)
        self.device = next(model.parameters()).device
        self.buffer: deque[Example] = deque(maxlen=cfg.buffer_size)
        self._pending: list[Example] = []
        self.rng = random.Random(cfg.seed)
        self.on_estimate = on_estimate
        self._lock = threading.Lock()  # guards _pending and the published snapshot
        self.version = 0
        self.steps = 0
        self.last_loss = float("nan")
        self.prequential_accuracy: float | None = None  # EMA of top-1 agreement on unseen requests
        self._snapshot: dict[str, torch.Tensor] | None = None
        # what serving drafts with (the last published weights), kept here to race the training copy
        self._served_model = copy.deepcopy(model).eval()
        self._race: deque[float] = deque(maxlen=GATE_WINDOW)  # training minus served, per unseen request

    def add(self, ex: Example) -> None:
        """Queue a served request for learning."""
        with self._lock:
            self._pending.append(ex)

    @torch.no_grad()
    def _hits(self, model: Any, ex: Example) -> torch.Tensor:
        """Whether `model`, fed the served tokens, predicts each generated token: [G] bool."""
        gen = len(ex.tokens) - ex.gen_start
        out = model(input_ids=ex.tokens[None, :-1], logits_to_keep=gen)
        logits: torch.Tensor = out.logits[0]  # [G, vocab]
        return logits.argmax(dim=-1) == ex.tokens[ex.gen_start :]

    def _loss(self, ex: Example) -> torch.Tensor:
        g = ex.gen_start - 1  # input position whose next token is the first generated one
        n_in = len(ex.tokens) - 1
        prompt = list(range(g)) if self.cfg.prompt_weight > 0 else []
        if 0 < self.cfg.prompt_positions < len(prompt):
            prompt = sorted(self.rng.sample(prompt, self.cfg.prompt_positions))
        # The output head (vocab x hidden, most of a small draft's compute) runs only where a loss is.
        keep = torch.tensor([*prompt, *range(g, n_in)], dtype=torch.long, device=self.device)  # [P + G]
        logits = self.model(input_ids=ex.tokens[None, :-1], logits_to_keep=keep).logits[0].float()
        logq = torch.log_softmax(logits, dim=-1)  # [P + G, vocab]
        p = len(prompt)
        soft = torch.softmax(ex.top_logp, dim=-1)  # [G, K] target top-k, renormalised
        loss = -(soft * logq[p:].gather(-1, ex.top_ids)).sum(-1).mean()
        if p:
            targets = ex.tokens[torch.tensor(prompt, dtype=torch.long, device=self.device) + 1]  # [P]
            lm = torch.nn.functional.nll_loss(logq[:p], targets)
            loss = loss + self.cfg.prompt_weight * lm
        return loss

    def step(self) -> bool:
        """One optimisation step on a replay batch (newest example first); False when nothing to learn.

        New examples are scored before they are learned from (prequential accuracy: top-1
        agreement with the target on traffic the draft has not trained on, an estimate of its
        first-position acceptance rate).
        """
        with self._lock:
            new, self._pending = self._pending, []
        new = [ex.to(self.device) for ex in new]
        for ex in new:
            hits = self._hits(self.model, ex)
            acc = float(hits.float().mean())
            p = self.prequential_accuracy
            self.prequential_accuracy = acc if p is None else 0.7 * p + 0.3 * acc
            self._judge(hits, ex)
            self.buffer.append(ex)
        if new and self.on_estimate is not None and self.prequential_accuracy is not None:
            self.on_estimate(self.prequential_accuracy)
        if not self.buffer:
            return False
        batch = [self.buffer[-1]]
        older = list(self.buffer)[:-1]
        batch += self.rng.sample(older, min(len(older), self.cfg.batch_size - 1))
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for ex in batch:
            loss = self._loss(ex) / len(batch)
            loss.backward()  # type: ignore[no-untyped-call]
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.trained.values(), 1.0)
        self.opt.step()
        self.steps += 1
        self.last_loss = total
        return True

    def _judge(self, hits: torch.Tensor, ex: Example) -> None:
        """Before learning from a request, race the training weights against the served ones on it.

        Both are scored by the tokens a chain of `GATE_LOOKAHEAD` drafted tokens would have had accepted
        from each generated position (teacher-forced on the served tokens, which are the target's): the
        quantity serving pays for, not top-1 agreement, which moves much less. When the training weights
        are ahead on each of the last `GATE_WINDOW` requests neither had learned from (since the last
        publication), they are published; one request's difference swings by a token or more, so a sum
        let a lucky request publish weights that were behind on most (measured on the fixtures);
        otherwise serving keeps what it has, so a few requests' fine-tuning never sets the draft back.
        """
        served = self._hits(self._served_model, ex)
        self._race.append(float(chain_lengths(hits).mean() - chain_lengths(served).mean()))
        if len(self._race) < GATE_WINDOW or min(self._race) <= 0:
            return
        weights = {k: p.detach().clone() for k, p in self.trained.items()}  # frozen ones never change
        self._served_model.load_state_dict(weights, strict=False)
        self._race.clear()
        with self._lock:
            self._snapshot = weights
            self.version += 1

    def snapshot(self) -> tuple[int, dict[str, torch.Tensor] | None]:
        """Return (version, weights) of the latest trained model."""
        with self._lock:
            return self.version, self._snapshot


def train_in_background(
    step: Callable[[], bool],
    cfg: Any,
    wake: threading.Event,
    stop: threading.Event,
    failed: Callable[[Exception], None],
) -> None:
    """A trainer thread's loop: after each wake-up, up to `cfg.steps_per_request` steps, each followed by
    a pause that keeps training to `cfg.compute_share` of wall time; a step that raises is reported to
    `failed` and training waits for the next request (serving and later learning go on)."""
    share = cfg.compute_share
    while not stop.is_set():
        wake.wait(timeout=0.5)
        wake.clear()
        for _ in range(cfg.steps_per_request):
            if stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                if not step():
                    break
            except Exception as exc:  # noqa: BLE001 - a failed update must not stop serving or learning
                failed(exc)
                break
            stop.wait((time.perf_counter() - t0) * (1.0 - share) / share)


class Trainer:
    """A learning proposer's training loop: `steps_per_request` steps inline after each request, or in a
    worker thread woken after each request (`cfg.background`); failed background steps are counted and
    logged as `event=<event>` (serving and later learning go on); `close` stops the worker."""

    def __init__(
        self, step: Callable[[], bool], cfg: Any, event: str, thread_name: str, logger: logging.Logger
    ) -> None:
        self._step, self.cfg, self.event, self.log = step, cfg, event, logger
        self.failures = 0
        self._wake, self._stop = threading.Event(), threading.Event()
        self.worker: threading.Thread | None = None
        if cfg.background:
            self.worker = threading.Thread(target=self._run, name=thread_name, daemon=True)
            self.worker.start()

    def after_request(self) -> None:
        """Learn from what was just added: wake the worker, or take the steps now."""
        if self.worker is not None:
            self._wake.set()
        else:
            for _ in range(self.cfg.steps_per_request):
                self._step()

    def _run(self) -> None:
        train_in_background(self._step, self.cfg, self._wake, self._stop, self._failed)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.log.error("event=%s failures=%d error=%r", self.event, self.failures, exc)

    def close(self) -> None:
        """Stop the worker (if any)."""
        self._stop.set()
        self._wake.set()
        if self.worker is not None:
            self.worker.join(timeout=10)


class LearnsOnline:
    """What a proposer that learns while serving shows the server and the controller (adaptive, feature)."""

    name: str
    on_estimate: Callable[[str, float], None] | None
    trainer: Trainer
    _served_version: int

    @property
    def served_version(self) -> int:
        """Version of the trained weights now drafting (0: the weights it started from)."""
        return self._served_version

    @property
    def train_failures(self) -> int:
        """Background training steps that raised (counted, logged; training goes on)."""
        return self.trainer.failures

    def _report(self, accuracy: float) -> None:
        """Pass the learner's prequential accuracy on to the controller, under this proposer's name."""
        if self.on_estimate is not None:
            self.on_estimate(self.name, accuracy)

    def close(self) -> None:
        """Stop the background trainer (if any)."""
        self.trainer.close()


class AdaptiveProposer(LearnsOnline, DraftModelProposer):
    """A draft model that keeps learning from the target's verified outputs."""

    def __init__(
        self,
        lm: CachedLM,
        cfg: AdaptiveConfig | None = None,
        name: str = "adaptive",
        on_estimate: Callable[[str, float], None] | None = None,
        counts: torch.Tensor | None = None,
    ) -> None:
        super().__init__(lm, name=name, counts=counts)
        self.cfg = cfg or AdaptiveConfig()
        self.on_estimate = on_estimate
        self.distiller = OnlineDistiller(copy.deepcopy(lm.model), self.cfg, self._report)
        self._served_version = 0
        self._prompt: list[int] = []
        self._top_ids: list[torch.Tensor] = []  # [n, K] per observe
        self._top_logp: list[torch.Tensor] = []
        # the step is looked up on each call, so a replaced distiller.step is the one run
        self.trainer = Trainer(
            lambda: self.distiller.step(), self.cfg, "adaptive_train_failure", "adaspec-adaptive-trainer", log
        )

    # -- serving -------------------------------------------------------------------------
    def begin(self, request: RequestInfo) -> None:
        """Swap in the newest trained weights and re-rank a reduced vocabulary when the counted traffic
        moved (between requests only), then reset the cache."""
        version, weights = self.distiller.snapshot()
        swapped = weights is not None and version != self._served_version
        if swapped:
            self.lm.model.load_state_dict(weights, strict=False)  # the trained parameters only
            self._served_version = version
        reranked = self.counts is not None and self.counts.rerank()
        if reranked or (swapped and self.vocab is not None and any(is_table(n) for n in weights or {})):
            self.vocab = self._vocab_map()  # new ids, or a trained output layer's new rows
        super().begin(request)
        self._prompt = list(request.prompt_ids)
        self._top_ids, self._top_logp = [], []

    def observe(self, context: Sequence[int], num_new: int, target_logits: torch.Tensor) -> None:
        """Keep the target's top-k log-probabilities at the newly committed positions."""
        logp = torch.log_softmax(target_logits.float(), dim=-1)  # [num_new, vocab]
        top = torch.topk(logp, self.cfg.soft_top_k, dim=-1)
        self._top_ids.append(top.indices.cpu())
        self._top_logp.append(top.values.cpu())

    def end(self, output_ids: Sequence[int]) -> None:
        """Count the request toward a reduced vocabulary, turn it into a training example, learn from it."""
        if self.counts is not None:
            self.counts.add([*self._prompt, *output_ids])
        if not output_ids or not self._top_ids:
            return
        top_ids = torch.cat(self._top_ids)[: len(output_ids)]  # [G, K]
        top_logp = torch.cat(self._top_logp)[: len(output_ids)]
        prompt = self._prompt[-self.cfg.max_context :]
        tokens = torch.tensor([*prompt, *output_ids], dtype=torch.long)  # [T]
        ex = Example(tokens=tokens, gen_start=len(prompt), top_ids=top_ids, top_logp=top_logp)
        if ex.gen_start < 1:
            return  # nothing to condition the first generated token on
        self.distiller.add(ex)
        self.trainer.after_request()

    def save_revision(self, out_dir: Path, **manifest: Any) -> Manifest:
        """Write the newest trained weights (and a reduced vocabulary's counts) as a revision (see
        artifacts.save_revision for the fields)."""
        model = copy.deepcopy(self.lm.model)
        _, weights = self.distiller.snapshot()
        if weights is not None:
            model.load_state_dict(weights, strict=False)
        metrics = dict(manifest.pop("metrics", {}) or {})
        if self.distiller.prequential_accuracy is not None:
            metrics.setdefault("prequential_accuracy", round(self.distiller.prequential_accuracy, 4))
        counts = self.counts.counts if self.counts is not None else None
        return save_revision(model, out_dir, metrics=metrics, counts=counts, **manifest)
