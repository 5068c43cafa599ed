"""`adaspec adapt`: captured traffic -> distilled candidate -> offline replay gate -> revision (or not)."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import tqdm

from adaspec.cli.errors import CommandError
from adaspec.runtime.adapt.cli import EXIT_CANDIDATE, EXIT_GATED
from adaspec.runtime.artifacts import MANIFEST, ArtifactError, load_revision, manifest_sha256, save_revision
from adaspec.runtime.calibrate import measure_verify_seconds, proposer_step_seconds
from adaspec.runtime.capture import CapturedRequest, CaptureFormatError, read_records
from adaspec.runtime.controller import Controller, ControllerConfig, CostModel
from adaspec.runtime.engine import SpeculativeEngine
from adaspec.runtime.models import CachedLM, ModelLoadError, load_causal_lm, tokenizer_fingerprint
from adaspec.runtime.proposers.adaptive import freeze_tables_if_dominant
from adaspec.runtime.proposers.static import DraftModelProposer
from adaspec.runtime.proposers.vocab import TokenCounts, draft_counts, reduced_size
from adaspec.runtime.server.locations import LocationError, resolve
from adaspec.runtime.train_draft import kd_loss


@dataclass(frozen=True)
class Replay:
    """A draft's figures on the held-out requests (greedy, fixed lookahead)."""

    requests: int
    drafts: int
    draft_tokens: int
    accepted: int
    generated: int
    target_passes: int
    acceptance_rate: float
    mean_accepted_length: float
    modelled_tokens_per_second: float


def is_heldout(rec: CapturedRequest, fraction: float) -> bool:
    """Whether a captured request is kept out of training (by a hash of its id: stable across runs)."""
    return int(hashlib.sha256(rec.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def load_parent(path: Path | None, tokenizer_sha256: str, device: str) -> Any:
    """The parent draft: a revision directory (checked) or a static draft directory; a copy of nothing
    is refused (adapt distils from a parent)."""
    if path is None:
        raise CommandError("--parent-artifact is needed: the revision or static draft to start from")
    if (path / MANIFEST).is_file() and "files" in json.loads((path / MANIFEST).read_text()):
        model, _ = load_revision(path, tokenizer_sha256, device)
        return model
    if tokenizer_fingerprint(path) != tokenizer_sha256:
        raise CommandError(f"--parent-artifact {str(path)!r} has another tokenizer than the target's")
    return load_causal_lm(path, "parent draft", device)


def distil(
    student: Any,
    target: Any,
    records: list[CapturedRequest],
    steps: int,
    lr: float,
    budget_s: float,
    seed: int,
    device: str,
    window: int = 128,
) -> dict[str, float]:
    """Forward-KL distillation toward the target on the captured sequences (DistillSpec arXiv 2310.08461,
    on served traffic as Online Speculative Decoding arXiv 2310.07177 does); returns what it did.

    Each step takes one captured request and a random span of at most `window` of its tokens (prompt and
    output): on CPU a step over a whole 400-token request costs the target's forward pass and the draft's
    full-vocabulary logits at every position, several seconds for SmolLM2.
    """
    trained = freeze_tables_if_dominant(student.train())
    opt = torch.optim.AdamW(trained.values(), lr=lr, weight_decay=0.0)
    rng = random.Random(seed)
    seqs = [torch.tensor([r.prompt_ids + r.output_ids], dtype=torch.long, device=device) for r in records]
    t0, done, ema = time.monotonic(), 0, float("nan")
    bar = tqdm.tqdm(range(steps), desc="adapt: distil", unit="step", mininterval=2.0, file=sys.stderr)
    for _ in bar:
        if time.monotonic() - t0 > budget_s:
            break
        seq = seqs[rng.randrange(len(seqs))]  # [1, T]
        start = rng.randrange(max(1, seq.shape[1] - window + 1))
        ids = seq[:, start : start + window]  # [1, <= window]
        with torch.no_grad():
            teacher = target(input_ids=ids).logits  # [1, T, vocab]
        loss = kd_loss(student(input_ids=ids).logits, teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(trained.values(), 1.0)
        opt.step()
        value = float(loss.detach())
        ema = value if ema != ema else 0.9 * ema + 0.1 * value
        done += 1
        bar.set_postfix(kl=f"{ema:.3f}")
    student.eval()
    return {"steps": done, "seconds": round(time.monotonic() - t0, 1), "final_kl": round(ema, 4)}


def replay(
    target: CachedLM,
    draft: Any,
    records: list[CapturedRequest],
    k: int,
    t_verify: float,
    name: str = "draft",
    counts: torch.Tensor | None = None,
) -> Replay:
    """Re-decode the held-out prompts greedily with `draft` proposing k tokens a step (over the reduced
    vocabulary its token `counts` rank, as serving would); measure acceptance and model tokens/s from
    measured costs (target pass over k+1 tokens, one draft step)."""
    lm = CachedLM(draft, target.device)
    proposer = DraftModelProposer(lm, name="draft", counts=counts)
    t_draft = proposer_step_seconds(proposer) or 0.0
    engine = SpeculativeEngine(
        target,
        [proposer],
        Controller(ControllerConfig(fixed_k=k), CostModel({1: 1.0}, {})),
    )
    drafts = draft_tokens = accepted = generated = passes = 0
    bar = tqdm.tqdm(records, desc=f"adapt: replay {name}", unit="req", mininterval=2.0, file=sys.stderr)
    for rec in bar:
        res = engine.generate(rec.prompt_ids, max(1, len(rec.output_ids)))
        s = res.stats.per_speculator["draft"]
        drafts, draft_tokens, accepted = (
            drafts + s.drafts,
            draft_tokens + s.draft_tokens,
            accepted + s.accepted_tokens,
        )
        generated += res.stats.generated_tokens
        passes += res.stats.target_forward_passes
    seconds = passes * t_verify + draft_tokens * t_draft
    return Replay(
        requests=len(records),
        drafts=drafts,
        draft_tokens=draft_tokens,
        accepted=accepted,
        generated=generated,
        target_passes=passes,
        acceptance_rate=round(accepted / draft_tokens, 4) if draft_tokens else 0.0,
        mean_accepted_length=round(1 + accepted / drafts, 4) if drafts else 0.0,
        modelled_tokens_per_second=round(generated / seconds, 2) if seconds > 0 else 0.0,
    )


def gate(
    parent: Replay, candidate: Replay, heldout: int, min_heldout: int, min_improvement: float
) -> list[str]:
    """Why the candidate must not be written (empty: it passes)."""
    reasons = []
    if heldout < min_heldout:
        reasons.append(f"only {heldout} held-out requests, the gate needs {min_heldout}")
    gain = candidate.acceptance_rate - parent.acceptance_rate
    if gain < min_improvement:
        reasons.append(
            f"held-out acceptance {candidate.acceptance_rate:.3f} vs the parent's "
            f"{parent.acceptance_rate:.3f}: {gain:+.3f}, the gate needs {min_improvement:+.3f}"
        )
    return reasons


def run_adapt(args: argparse.Namespace) -> int:
    """Distil, replay, gate; write (and register) the candidate only when it passes. Returns the exit code."""
    torch.manual_seed(args.seed)
    try:
        target_dir = resolve(args.target_model, "--target-model")
        capture_dir = resolve(args.capture, "--capture")
        parent_dir = resolve(args.parent_artifact, "--parent-artifact") if args.parent_artifact else None
        tok = tokenizer_fingerprint(target_dir)
        records = list(read_records(capture_dir, since=args.since, last=args.last))
    except (LocationError, ModelLoadError) as exc:
        raise CommandError(str(exc)) from None
    except CaptureFormatError as exc:
        raise CommandError(f"corrupt capture shard: {exc}") from None
    if not records:
        raise CommandError(f"no captured traffic in {str(capture_dir)!r} for the window asked")
    other = [r.id for r in records if r.tokenizer_sha256 and r.tokenizer_sha256 != tok]
    if other:
        raise CommandError(
            f"{len(other)} captured requests (e.g. {other[0]}) were served with another tokenizer than "
            f"{str(target_dir)!r}'s"
        )
    heldout = [r for r in records if is_heldout(r, args.heldout_fraction)]
    train = [r for r in records if not is_heldout(r, args.heldout_fraction)]
    if not train:
        raise CommandError(f"all {len(records)} captured requests are held out: nothing to train on")
    try:
        target_model = load_causal_lm(target_dir, "target", args.device)
        parent = load_parent(parent_dir, tok, args.device)
        vocab = int(target_model.get_output_embeddings().weight.shape[0])
        parent_counts = draft_counts(parent_dir, vocab) if parent_dir is not None else None
    except (ModelLoadError, ArtifactError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    counts = None  # the candidate's: the parent's ranking with the traffic it is trained on counted in
    if parent_counts is not None:
        table = TokenCounts.ranked(parent_counts, reduced_size(vocab))
        for rec in train:
            table.add(rec.prompt_ids + rec.output_ids)
        counts = table.counts
    candidate = copy.deepcopy(parent)
    training = distil(
        candidate,
        target_model,
        train,
        args.steps,
        args.lr,
        args.time_budget,
        args.seed,
        args.device,
        args.window,
    )
    target = CachedLM(target_model, args.device)
    t_verify = measure_verify_seconds(target, [args.lookahead + 1])[args.lookahead + 1]
    before = replay(target, parent, heldout, args.lookahead, t_verify, "parent", parent_counts)
    after = replay(target, candidate, heldout, args.lookahead, t_verify, "candidate", counts)
    reasons = gate(before, after, len(heldout), args.min_heldout, args.min_improvement)
    revision = args.revision or (f"r-{args.run_id}" if args.run_id else f"r{int(time.time())}")
    result: dict[str, Any] = {
        "revision": revision,
        "parent": args.parent,
        "train_requests": len(train),
        "heldout_requests": len(heldout),
        "training": training,
        "parent_replay": asdict(before),
        "candidate_replay": asdict(after),
        "gate": {"passed": not reasons, "reasons": reasons},
    }
    if not reasons:
        window = {
            "since": args.since,
            "last": args.last,
            "first": records[0].time,
            "until": records[-1].time,
            "requests": len(records),
            "run_id": args.run_id,
        }
        metrics = {
            f"offline_{k}": float(v)
            for k, v in asdict(after).items()
            if k in ("acceptance_rate", "mean_accepted_length", "modelled_tokens_per_second")
        }
        metrics["offline_parent_acceptance_rate"] = before.acceptance_rate
        out = Path(args.out)
        save_revision(
            candidate,
            out,
            revision=revision,
            parent=args.parent,
            target_model=target_dir.name,
            tokenizer_sha256=tok,
            training_window=window,
            metrics=metrics,
            counts=counts,
        )
        result["out"] = str(out)
        result["sha256"] = manifest_sha256(out)
        if args.register_url:
            result["registered"] = register(args, revision, out, result["sha256"], metrics)
    print_result(result, args.json)
    return EXIT_CANDIDATE if not reasons else EXIT_GATED


def register(
    args: argparse.Namespace, revision: str, out: Path, sha256: str, metrics: dict[str, float]
) -> bool:
    """POST the candidate to the control plane (`POST /api/v1/speculators/{name}/revisions`)."""
    import httpx

    if not args.speculator or not args.token_file:
        raise CommandError("--register-url needs --speculator and --token-file")
    if args.artifact_uri:
        try:
            named = resolve(args.artifact_uri, "--artifact-uri")
        except LocationError as exc:
            raise CommandError(str(exc)) from None
        if named.resolve() != out.resolve():
            raise CommandError(f"--artifact-uri {args.artifact_uri!r} names {named}, not --out {out}")
    token = Path(args.token_file).read_text().split()[0]
    url = f"{args.register_url.rstrip('/')}/api/v1/speculators/{args.speculator}/revisions"
    body = {
        "revision": revision,
        "artifact_uri": args.artifact_uri or out.resolve().as_uri(),
        "sha256": sha256,
        "metrics": metrics,
        "run_id": args.run_id or None,
    }
    resp = httpx.post(url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    if resp.status_code >= 400:
        raise CommandError(f"registering {revision} at {url}: HTTP {resp.status_code}: {resp.text[:300]}")
    return True


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """The gate's verdict and its reasons, either way."""
    if as_json:
        print(json.dumps(result))
        return
    p, c = result["parent_replay"], result["candidate_replay"]
    print(
        f"held-out replay on {result['heldout_requests']} requests (trained on {result['train_requests']}):"
    )
    print(f"{'':10} {'acceptance':>10} {'accepted len':>12} {'tok/s (modelled)':>17}")
    for name, r in (("parent", p), ("candidate", c)):
        print(
            f"{name:10} {r['acceptance_rate']:>10.3f} {r['mean_accepted_length']:>12.2f} "
            f"{r['modelled_tokens_per_second']:>17.1f}"
        )
    if result["gate"]["passed"]:
        print(
            f"gate: passed; wrote {result['revision']} to {result['out']} "
            f"(manifest sha256 {result['sha256']})"
        )
    else:
        print("gate: refused, nothing written:")
        for reason in result["gate"]["reasons"]:
            print(f"  - {reason}")
