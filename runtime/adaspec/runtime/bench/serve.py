"""`adaspec bench serve`: the same prompts through serve's engine in-process and over HTTP, side by side."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from adaspec.cli.errors import CommandError
from adaspec.runtime.bench.servepaths import SERVED_NAME, BenchPath, Trace, wait_idle
from adaspec.runtime.bench.servesetup import NOTES, ServeBenchConfig, prepare, report_md, setup_info

GOAL_RATIO = 0.95  # HTTP at concurrency 1 keeps this share of the engine's own tokens/s
PATHS = ("engine", "http")


@dataclass(frozen=True)
class Row:
    """One path at one concurrency: what the table prints."""

    path: str
    concurrency: int
    requests: int
    errors: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    itl_p50_ms: float | None
    itl_p99_ms: float | None
    e2e_mean_ms: float | None = None  # submission to the last token's arrival
    busy_share: float | None = None  # sum of request times over wall time x concurrency
    first_error: str | None = None


def parse_concurrency(text: str) -> tuple[int, ...]:
    """Return the concurrency levels in the order given; ValueError naming a bad one."""
    levels: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part.isdigit() or int(part) <= 0:
            raise ValueError(f"--concurrency takes positive integers separated by commas, got {part!r}")
        levels.append(int(part))
    return tuple(dict.fromkeys(levels))


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the q-th percentile (0..100, linear between closest ranks, as numpy); None when empty."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q!r}")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def itl_samples(trace: Trace) -> list[float]:
    """Return seconds per token between consecutive deltas, one sample per token of the later delta.

    The first delta's tokens belong to the time to first token; a delta of n tokens that arrives g s
    after the previous one contributes n samples of g / n.
    """
    out: list[float] = []
    for (t0, _), (t1, n) in zip(trace.arrivals, trace.arrivals[1:], strict=False):
        out.extend([(t1 - t0) / n] * n)
    return out


def summarize_row(path: str, concurrency: int, traces: Sequence[Trace], wall_s: float) -> Row:
    """Return a row's figures: tokens/s is generated tokens over the row's wall time."""
    ok = [t for t in traces if t.error is None]
    tokens = sum(t.tokens for t in ok)
    ttft = [(t.first_text - t.sent) * 1e3 for t in ok if t.first_text is not None]
    itl = [s * 1e3 for t in ok for s in itl_samples(t)]
    errors = [t.error for t in traces if t.error is not None]
    e2e = [t.arrivals[-1][0] - t.sent for t in ok if t.arrivals]
    return Row(
        path=path,
        concurrency=concurrency,
        requests=len(traces),
        errors=len(errors),
        tokens=tokens,
        wall_s=wall_s,
        tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
        ttft_p50_ms=percentile(ttft, 50),
        ttft_p99_ms=percentile(ttft, 99),
        itl_p50_ms=percentile(itl, 50),
        itl_p99_ms=percentile(itl, 99),
        e2e_mean_ms=sum(e2e) / len(e2e) * 1e3 if e2e else None,
        busy_share=sum(e2e) / (wall_s * concurrency) if e2e and wall_s > 0 else None,
        first_error=errors[0] if errors else None,
    )


def ratios(rows: Sequence[Row]) -> dict[int, float | None]:
    """Return http/engine tokens/s per concurrency (None where either row is missing or has no tokens)."""
    by = {(r.path, r.concurrency): r for r in rows}
    out: dict[int, float | None] = {}
    for c in dict.fromkeys(r.concurrency for r in rows):
        engine, http = by.get(("engine", c)), by.get(("http", c))
        ok = engine is not None and http is not None and engine.tokens_per_s > 0
        out[c] = http.tokens_per_s / engine.tokens_per_s if ok and http is not None and engine else None
    return out


def goal(rows: Sequence[Row], target: float = GOAL_RATIO) -> dict[str, Any]:
    """Return the goal's verdict: HTTP at concurrency 1 keeps >= `target` of the engine's tokens/s."""
    ratio = ratios(rows).get(1)
    failed = any(r.errors for r in rows if r.concurrency == 1)
    met = ratio is not None and not failed and ratio >= target
    return {"target": target, "ratio": ratio, "met": met, "errors": failed}


def goal_line(verdict: dict[str, Any]) -> str:
    """Return the goal as one printed line: met / not met, with the figure."""
    want = f"goal: HTTP at concurrency 1 keeps >= {verdict['target']:.0%} of the engine's tokens/s"
    if verdict["ratio"] is None:
        return f"{want}: not measured (no concurrency-1 rows with tokens)"
    figure = f"{verdict['ratio']:.1%}"
    if verdict["errors"]:
        return f"{want}: not met ({figure}, with failed requests)"
    return f"{want}: {'met' if verdict['met'] else 'not met'} ({figure})"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(rows: Sequence[Row]) -> str:
    """Return the results table: one line per row, the ratio on each HTTP line."""
    by_c = ratios(rows)
    head = (
        f"{'path':<6} {'conc':>4} {'reqs':>4} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'ITL p50':>8} {'ITL p99':>8} {'http/engine':>11} {'errors':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = by_c.get(r.concurrency)
        shown = f"{ratio:.3f}" if r.path == "http" and ratio is not None else "-"
        lines.append(
            f"{r.path:<6} {r.concurrency:>4} {r.requests:>4} {r.tokens_per_s:>8.1f} {_ms(r.ttft_p50_ms):>9} "
            f"{_ms(r.ttft_p99_ms):>9} {_ms(r.itl_p50_ms):>8} {_ms(r.itl_p99_ms):>8} {shown:>11} "
            f"{r.errors:>6}"
        )
    lines.append("(TTFT and ITL in ms; tok/s: generated tokens over the row's wall time)")
    return "\n".join(lines)


def compare_outputs(traces: dict[tuple[str, int], list[Trace]]) -> dict[str, int]:
    """Count HTTP requests whose token ids equal the engine's for the same prompt and concurrency."""
    same = compared = 0
    for (path, c), got in traces.items():
        if path != "http":
            continue
        engine = {t.index: t.token_ids for t in traces.get(("engine", c), []) if t.error is None}
        for t in got:
            if t.error is None and t.index in engine:
                compared += 1
                same += t.token_ids == engine[t.index]
    return {"compared": compared, "same": same}


def run_row(
    path: BenchPath,
    concurrency: int,
    prompts: Sequence[Sequence[int]],
    max_tokens: int,
    tick: Callable[[], object],
) -> tuple[list[Trace], float]:
    """Send every prompt through `path` from `concurrency` threads; return the traces and wall seconds.

    Thread j sends prompts j, j + c, j + 2c, ... one after the other (a closed loop per client).
    """
    traces: list[Trace] = []
    lock = threading.Lock()

    def client(j: int) -> None:
        for i in range(j, len(prompts), concurrency):
            trace = path.request(i, prompts[i], max_tokens)
            with lock:
                traces.append(trace)
                tick()

    threads = [threading.Thread(target=client, args=(j,), daemon=True) for j in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return sorted(traces, key=lambda t: t.index), wall


def config_from_args(args: argparse.Namespace) -> ServeBenchConfig:
    """Validate the command line before anything heavy is loaded."""
    try:
        levels = parse_concurrency(args.concurrency)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    argv = sys.argv[1:]
    return ServeBenchConfig(
        strategy=args.strategy,
        prompts=args.prompts,
        max_tokens=args.max_tokens,
        concurrency=levels,
        out=Path(args.out) if args.out else None,
        as_json=args.json,
        pretrained=args.pretrained,
        seed=args.seed,
        command="adaspec " + " ".join(argv) if argv[:2] == ["bench", "serve"] else "adaspec bench serve",
    )


def run_from_args(args: argparse.Namespace) -> int:
    """CLI entry: run, print the table (or JSON), write results.json and report.md under --out."""
    config = config_from_args(args)
    results = run(config)
    if config.out is not None:
        config.out.mkdir(parents=True, exist_ok=True)
        (config.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (config.out / "report.md").write_text(report_md(results))
    if config.as_json:
        print(json.dumps(results, indent=1))
    else:
        print(results["table"])
        print(results["goal_line"])
        same = results["outputs"]
        print(f"outputs: {same['same']}/{same['compared']} HTTP requests equal the engine's token ids")
        for note in results["notes"]:
            print(f"note: {note}")
    errors = sum(r["errors"] for r in results["rows"])
    return 1 if errors else 0


def run(config: ServeBenchConfig) -> dict[str, Any]:
    """Warm both paths, then per concurrency an engine row and an HTTP row (never at once); return results."""
    from tqdm import tqdm

    from adaspec.runtime.bench.servepaths import EngineInProcess, HttpServe

    started = time.perf_counter()
    prepared = prepare(config, config.prompts + config.warmup)
    warm, prompts = prepared.prompts[: config.warmup], prepared.prompts[config.warmup :]
    rows: list[Row] = []
    traces: dict[tuple[str, int], list[Trace]] = {}
    exits: dict[str, int] = {}
    seconds = {"prepare": time.perf_counter() - started, "settle": 0.0}

    def phase(name: str, t0: float) -> None:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="adaspec-bench-serve-") as tmp:
        log = (config.out or Path(tmp)) / "serve.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [*prepared.serve_argv, f"--state-dir={tmp}", f"--served-model-name={SERVED_NAME}"]
        t0 = time.perf_counter()
        try:
            http: BenchPath = HttpServe(argv, log)  # loaded first, alone: kernel tuning and calibration
        except (RuntimeError, TimeoutError, OSError) as exc:
            raise CommandError(f"adaspec serve did not start: {exc}") from exc
        phase("http_load", t0)
        engine: BenchPath | None = None
        try:
            seconds["settle"] += wait_idle(http.pids())
            t0 = time.perf_counter()
            engine = EngineInProcess(argv)
            phase("engine_load", t0)
            paths = {"engine": engine, "http": http}
            t0 = time.perf_counter()
            for p in paths.values():
                for i, ids in enumerate(warm):
                    got = p.request(-1 - i, ids, config.max_tokens)
                    if got.error is not None:
                        raise CommandError(f"warm-up request through {p.name} failed: {got.error}")
            phase("warmup", t0)
            total = len(config.concurrency) * len(PATHS) * len(prompts)
            with tqdm(total=total, unit="req", desc="bench serve", file=sys.stderr) as bar:
                for c in config.concurrency:
                    for name in PATHS:
                        seconds["settle"] += wait_idle([*engine.pids(), *http.pids()])
                        bar.set_postfix(path=name, concurrency=c, refresh=False)
                        t0 = time.perf_counter()
                        got_traces, wall = run_row(paths[name], c, prompts, config.max_tokens, bar.update)
                        phase("rows", t0)
                        traces[(name, c)] = got_traces
                        rows.append(summarize_row(name, c, got_traces, wall))
        finally:
            t0 = time.perf_counter()
            if engine is not None:
                exits["engine"] = engine.close()
            exits["http"] = http.close()
            phase("close", t0)
    verdict = goal(rows)
    notes = [*NOTES, *config.notes]
    if exits.get("http", 0) != 0:
        notes.append(f"adaspec serve exited {exits['http']} on SIGTERM (expected 0); its log: {log}")
    return {
        "setup": setup_info(config, prepared, time.perf_counter() - started)
        | {"phase_seconds": {k: round(v, 1) for k, v in seconds.items()}},
        "rows": [asdict(r) for r in rows],
        "ratios": {str(c): r for c, r in ratios(rows).items()},
        "goal": verdict,
        "goal_line": goal_line(verdict),
        "outputs": compare_outputs(traces),
        "table": format_table(rows),
        "notes": notes,
    }
