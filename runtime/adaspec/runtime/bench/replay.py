"""Recorded greedy requests replayed through the real engine without running the target.

Under greedy decoding every lossless strategy commits the target's own tokens, so once a run has
recorded them (`traces.jsonl`: prompt and output of every request, in serving order), a proposer that
needs nothing of the target but its choices can be measured on the same requests again in seconds. A
`ReplayTarget` stands in for the model: at every position it scores the token the target chose there.
The engine, the controller and the proposers are the real ones; the target's cost per pass comes
from the costs the recording run measured (`results.json`'s `costs.verify_ms`) instead of from a
forward pass.

Exact: drafted and accepted tokens per target pass under the lookahead decisions taken. Estimated:
tokens/s, as committed tokens over (the recorded verify seconds of every pass + the drafts' own
measured seconds). Proposers that learn from the target's logits or features (adaptive, feature)
cannot be replayed (their training signal would be the replay's one-hot rows), nor can sampling runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from adaspec.runtime.bench.constants import FIXED_K, TRACES_FILE
from adaspec.runtime.controller import Controller, ControllerConfig, CostModel
from adaspec.runtime.strategies import BASELINE

__all__ = ["TRACES_FILE", "Trace", "read_traces", "replay", "run_replay", "write_traces"]
# Proposers whose drafts depend only on the tokens committed (and, for `static`, its own model).
REPLAYABLE = ("suffix", "ngram", "arctic-suffix", "static")


class ReplayError(ValueError):
    """Traces or costs that cannot be replayed; the message says which and why."""


@dataclass(frozen=True)
class Trace:
    """One recorded greedy request: its phase (workload tag), prompt and the target's output."""

    phase: str
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]


def write_traces(path: Path, traces: Iterable[Trace]) -> None:
    """Write traces as JSON lines, in serving order."""
    lines = [
        json.dumps({"phase": t.phase, "prompt_ids": list(t.prompt_ids), "output_ids": list(t.output_ids)})
        for t in traces
    ]
    path.write_text("".join(f"{line}\n" for line in lines))


def read_traces(path: Path) -> list[Trace]:
    """Read `write_traces`' file; ReplayError names the line that is not a trace."""
    traces = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            trace = Trace(
                str(obj["phase"]),
                tuple(int(t) for t in obj["prompt_ids"]),
                tuple(int(t) for t in obj["output_ids"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplayError(f"{path}:{number}: not a trace ({exc!r})") from None
        if not trace.prompt_ids or not trace.output_ids:
            raise ReplayError(f"{path}:{number}: a trace needs a prompt and an output")
        traces.append(trace)
    if not traces:
        raise ReplayError(f"{path}: no traces")
    return traces


class ReplayTarget:
    """The part of `CachedLM` the engine uses, answering from one recorded sequence (prompt + output).

    Row i of `feed` scores the token after the i-th token fed; it puts all its mass on the recorded
    token at that position, so greedy verification accepts exactly the drafted tokens the target
    would have. Rows after a rejected token are never read by greedy verification.
    """

    def __init__(self, vocab_size: int, max_positions: int = 1 << 20) -> None:
        self.vocab_size = vocab_size
        self.max_positions = max_positions
        self.reference: tuple[int, ...] = ()
        self.cached = 0

    def start(self, trace: Trace) -> None:
        """Answer for this request from now on."""
        self.reference = (*trace.prompt_ids, *trace.output_ids)

    def reset(self) -> None:
        self.cached = 0

    def feed(self, ids: Sequence[int], last: int = 0) -> torch.Tensor:
        if not ids:
            raise ValueError("feed needs at least one token")
        start, self.cached = self.cached, self.cached + len(ids)
        rows = range(start, self.cached)[-last:] if last > 0 else range(start, self.cached)
        logits = torch.zeros(len(rows), self.vocab_size)
        for r, pos in enumerate(rows):
            if pos + 1 < len(self.reference):
                logits[r, self.reference[pos + 1]] = 1.0
        return logits

    def truncate(self, length: int) -> None:
        self.cached = min(self.cached, length)


class RecordedCosts(CostModel):
    """Verify costs as recorded (never updated by the replay's own, near-zero, target passes)."""

    def observe_verify(self, q: int, seconds: float) -> None:
        del q, seconds


@dataclass
class PhaseFigures:
    """One strategy on one phase: requests, target passes, tokens, the estimated seconds."""

    requests: int = 0
    passes: int = 0
    generated: int = 0
    drafted: int = 0
    accepted: int = 0
    seconds: float = 0.0
    per_request: list[float] = field(default_factory=list)  # accepted length (tokens per pass) each

    def as_dict(self) -> dict[str, Any]:
        third = self.per_request[-max(1, len(self.per_request) // 3) :]
        return {
            "requests": self.requests,
            "target_passes": self.passes,
            "mean_accepted_length": round(self.generated / self.passes, 4) if self.passes else None,
            "last_third_accepted_length": round(sum(third) / len(third), 4) if third else None,
            "drafted_per_pass": round(self.drafted / self.passes, 4) if self.passes else None,
            "acceptance_rate": round(self.accepted / self.drafted, 4) if self.drafted else None,
            "estimated_tokens_per_second": round(self.generated / self.seconds, 2) if self.seconds else None,
        }


def verify_seconds(results: dict[str, Any]) -> dict[int, float]:
    """The recorded target cost per pass by tokens verified, from a `bench drift` results.json."""
    try:
        table = results["costs"]["verify_ms"]
        return {int(q): float(ms) / 1000.0 for q, ms in table.items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ReplayError("results.json has no costs.verify_ms (a complete bench drift writes it)") from None


def replay(
    traces: Sequence[Trace],
    strategy: str,
    verify: dict[int, float],
    vocab_size: int,
    *,
    controller: ControllerConfig | None = None,
    fixed_k: int | None = None,
    static_draft: Any | None = None,
    static_counts: Any | None = None,
) -> dict[str, PhaseFigures]:
    """Serve every trace, in order, with the strategy's real proposers and controller; figures per phase.

    Raises ReplayError for a strategy that runs a proposer replay cannot serve, and when the engine's
    output differs from the recorded one (a broken trace or replay, never a lossless engine's doing).
    """
    from dataclasses import replace

    from adaspec.runtime.engine import SpeculativeEngine
    from adaspec.runtime.models import CachedLM
    from adaspec.runtime.proposers.factory import BuildContext, build_proposer, proposers_for

    names = proposers_for(strategy)
    unfit = [n for n in names if n not in REPLAYABLE]
    if unfit:
        raise ReplayError(
            f"strategy {strategy!r} runs {', '.join(unfit)}, which learn from the target's logits or "
            f"features and cannot be replayed; replayable proposers: {', '.join(REPLAYABLE)}"
        )
    if 1 not in verify:
        raise ReplayError("the verify costs need an entry for one token")
    cfg = controller or ControllerConfig()
    if fixed_k is not None:
        cfg = replace(cfg, fixed_k=fixed_k, k_max=max(cfg.k_max, fixed_k))
    target = ReplayTarget(vocab_size)
    costs = RecordedCosts(verify, {})
    ctl = Controller(cfg, costs)
    ctx = BuildContext(
        vocab_size=vocab_size, k_max=cfg.k_max, static_draft=static_draft, static_counts=static_counts
    )
    proposers = [build_proposer(n, ctx) for n in names]
    for p in proposers:
        from adaspec.runtime.calibrate import proposer_step_seconds

        step = proposer_step_seconds(p)
        if step is not None:
            costs.draft[p.name] = step
    engine = SpeculativeEngine(cast(CachedLM, target), proposers, ctl if names else None, None)
    figures: dict[str, PhaseFigures] = {}
    for number, trace in enumerate(traces):
        target.start(trace)
        res = engine.generate(trace.prompt_ids, max_new_tokens=len(trace.output_ids), tag=trace.phase)
        if tuple(res.token_ids) != trace.output_ids:
            raise ReplayError(f"request {number}: the replay's output differs from the recorded one")
        fig = figures.setdefault(trace.phase, PhaseFigures())
        fig.requests += 1
        fig.passes += len(res.steps)
        fig.generated += len(res.token_ids)
        fig.drafted += sum(s.drafted for s in res.steps)
        fig.accepted += sum(s.accepted for s in res.steps)
        # the stand-in target's passes cost next to nothing: this is the drafts' and the engine's own time
        draft_seconds = res.stats.decode_seconds
        fig.seconds += draft_seconds + sum(costs.t_verify(s.drafted + 1) for s in res.steps)
        fig.per_request.append(len(res.token_ids) / max(1, len(res.steps)))
    return figures


def baseline_figures(traces: Sequence[Trace], verify: dict[int, float]) -> dict[str, PhaseFigures]:
    """Target-only on the same traces: one pass per token at the recorded one-token cost."""
    figures: dict[str, PhaseFigures] = {}
    for trace in traces:
        fig = figures.setdefault(trace.phase, PhaseFigures())
        n = len(trace.output_ids)
        fig.requests += 1
        fig.passes += n
        fig.generated += n
        fig.seconds += n * verify[1]
        fig.per_request.append(1.0)
    return figures


def run_replay(
    traces: Sequence[Trace],
    strategies: Sequence[str],
    verify: dict[int, float],
    vocab_size: int,
    fixed_k: dict[str, int | None],
    static_draft: Any | None = None,
    controller: ControllerConfig | None = None,
    static_counts: Any | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Figures for every strategy (target-only first) by phase, as dicts."""
    out = {BASELINE: {ph: f.as_dict() for ph, f in baseline_figures(traces, verify).items()}}
    for name in strategies:
        if name == BASELINE:
            continue
        got = replay(
            traces,
            name,
            verify,
            vocab_size,
            controller=controller,
            fixed_k=fixed_k.get(name),
            static_draft=static_draft,
            static_counts=static_counts,
        )
        out[name] = {ph: f.as_dict() for ph, f in got.items()}
    return out


def parse_fixed_k(items: Sequence[str], defaults: dict[str, int | None]) -> dict[str, int | None]:
    """`--fixed-k NAME=K` over the defaults; K = 0 puts the strategy under the controller."""
    out = dict(defaults)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ReplayError(f"--fixed-k wants STRATEGY=K (K >= 0; 0 = the controller), got {item!r}")
        k = int(value)
        if k > 64:
            raise ReplayError(f"--fixed-k {item!r}: at most 64 tokens")
        out[name.strip()] = k or None
    return out


def table(figures: dict[str, dict[str, dict[str, Any]]], fixed_k: dict[str, int | None]) -> str:
    """A text table of the figures, and each adaspec strategy's ratio to the peers on accepted length."""
    head = "strategy (lookahead)        phase    acc.len  last3   drafted/pass  accept  est.tok/s  vs target"
    lines = [head, "-" * len(head)]
    base = figures.get(BASELINE, {})
    for name, phases in figures.items():
        k = fixed_k.get(name)
        label = f"{name} ({'k=' + str(k) if k else 'controller'})" if name != BASELINE else name
        for phase, f in phases.items():
            b = base.get(phase, {}).get("estimated_tokens_per_second")
            tps = f["estimated_tokens_per_second"]
            speed = f"{tps / b:.2f}x" if tps and b else "n/a"
            rate = "n/a" if f["acceptance_rate"] is None else f"{f['acceptance_rate']:.2f}"
            acc, last = f["mean_accepted_length"], f["last_third_accepted_length"]
            lines.append(
                f"{label:<27} {phase:<8} {acc:>7.2f} {last:>6.2f} {f['drafted_per_pass']:>13.2f}  {rate:>6}"
                f" {tps:>10.1f}  {speed:>8}"
            )
    return "\n".join(lines)


def run_from_args(args: Any) -> int:
    """CLI entry of `adaspec bench replay`: replay a bench drift run's traces with the given strategies."""
    from adaspec.cli.main import CommandError
    from adaspec.runtime.bench.commands import parse_strategies

    run_dir = Path(args.run).expanduser()
    try:
        traces = read_traces(run_dir / TRACES_FILE)
        results_path = run_dir / "results.json"
        if not results_path.is_file():
            raise ReplayError(f"{results_path} is missing: replay reads the run's measured costs from it")
        verify = verify_seconds(json.loads(results_path.read_text()))
        strategies = parse_strategies(args.strategies)
        fixed_k = parse_fixed_k(args.fixed_k or [], FIXED_K)
        static, counts = None, None
        if "static" in {n for s in strategies for n in _proposers(s)}:
            static, counts = _static_draft(args.static_draft)
        vocab = static.config.vocab_size if static is not None else _vocab(run_dir, traces)
        controller = ControllerConfig(k_max=args.max_lookahead) if args.max_lookahead else None
        figures = run_replay(traces, strategies, verify, vocab, fixed_k, static, controller, counts)
    except (ReplayError, OSError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps({"run": str(run_dir), "fixed_k": fixed_k, "strategies": figures}, indent=1))
    else:
        print(table(figures, fixed_k))
        print(f"{len(traces)} requests from {run_dir / TRACES_FILE}; verify costs from {results_path}")
    return 0


def _proposers(strategy: str) -> tuple[str, ...]:
    from adaspec.runtime.strategies import proposers_for

    return proposers_for(strategy)


def _static_draft(path: str | None) -> tuple[Any, Any | None]:
    """The run's static draft and its token counts (None without vocab.safetensors)."""
    from adaspec.runtime.models import load_causal_lm
    from adaspec.runtime.proposers.vocab import draft_counts

    if path is None:
        raise ReplayError("a strategy with the static draft needs --static-draft DIR (the run's draft)")
    model = load_causal_lm(Path(path).expanduser(), "static draft")
    return model, draft_counts(Path(path).expanduser(), int(model.config.vocab_size))


def _vocab(run_dir: Path, traces: Sequence[Trace]) -> int:
    """The target's vocabulary size from the run's setup when its model is here, else the traces' span."""
    try:
        setup = json.loads((run_dir / "results.json").read_text())["setup"]
        config = json.loads((Path(setup["target"]["path"]) / "config.json").read_text())
        return int(config["vocab_size"])
    except (OSError, KeyError, TypeError, ValueError):
        return 1 + max(max(t.prompt_ids + t.output_ids) for t in traces)
