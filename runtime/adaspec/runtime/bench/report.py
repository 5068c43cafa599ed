"""Writing the drift benchmark's results: results.json, drift.png (matplotlib) and report.md."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaspec.runtime.bench.constants import TRACES_FILE

OUTPUT_FILES = ("results.json", "drift.png", "report.md")
PARTIAL_FILE = "results.partial.json"


def clear_outputs(out: Path) -> None:
    """Remove earlier outputs so that a failed run never leaves older results looking current."""
    for name in (*OUTPUT_FILES, PARTIAL_FILE, TRACES_FILE):
        (out / name).unlink(missing_ok=True)


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 4)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_partial(out: Path, results: dict[str, Any], error: str) -> Path:
    """Write what was measured before a failure to results.partial.json, marked incomplete."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / PARTIAL_FILE
    _write_atomic(path, json.dumps(_clean({**results, "complete": False, "error": error}), indent=2) + "\n")
    return path


def write_all(out: Path, results: dict[str, Any]) -> list[Path]:
    """Write results.json, drift.png and report.md for a complete run; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "complete": True}
    plot(results, out / "drift.png")
    _write_atomic(out / "report.md", render_report(results))
    # results.json last: its presence means the run and the other two files are complete.
    _write_atomic(out / "results.json", json.dumps(_clean(results), indent=2) + "\n")
    (out / PARTIAL_FILE).unlink(missing_ok=True)
    return [out / name for name in OUTPUT_FILES]


def plot(results: dict[str, Any], path: Path) -> None:
    """Plot mean accepted length per window of requests for each strategy, phase boundaries marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases: Sequence[str] = results["setup"]["phases"]
    fig, ax = plt.subplots(figsize=(10, 5), dpi=110)
    boundaries: list[tuple[int, str]] = []
    for name, data in results["strategies"].items():
        xs, ys = [], []
        for lang in phases:
            wins = data["phases"].get(lang, {}).get("windows", [])
            if wins and name == next(iter(results["strategies"])):
                boundaries.append((wins[0]["first_request"], lang))
            for w in wins:
                xs.append((w["first_request"] + w["last_request"]) / 2 + 0.5)
                ys.append(w["mean_accepted_length"])
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=name)
    top = ax.get_ylim()[1]
    for start, lang in boundaries:
        ax.axvline(start, color="grey", linestyle="--", linewidth=0.8)
        ax.text(start + 0.3, top, lang, va="top", fontsize=9, color="dimgrey")
    ax.set_xlabel("request (in serving order)")
    ax.set_ylabel("mean accepted length (tokens per target pass)")
    window = results["setup"].get("window", 8)
    ax.set_title(f"Workload drift on {results['setup']['target']['name']}: windows of {window} requests")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _times(value: Any) -> str:
    """A ratio as "1.23x", or "n/a" (no target-only run to divide by)."""
    text = _fmt(value)
    return text if text == "n/a" else f"{text}x"


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return format(value, spec)


def table(results: dict[str, Any]) -> str:
    """Return the markdown table: one row per strategy and phase."""
    rows = [
        "| strategy | phase | mean accepted length | acceptance rate | tokens/s | speed-up vs target-only "
        "| same tokens as target-only |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for name, data in results["strategies"].items():
        for lang in results["setup"]["phases"]:
            f = data["phases"][lang]
            rows.append(
                f"| {name} | {lang} | {_fmt(f['mean_accepted_length'])} | {_fmt(f['acceptance_rate'])} "
                f"| {_fmt(f['tokens_per_second'], '.1f')} | {_times(f['speedup_vs_target_only'])} "
                f"| {_fmt(f['tokens_match_target_only'])} |"
            )
    return "\n".join(rows)


def time_table(results: dict[str, Any]) -> str:
    """Return the markdown table of where decode time went: ms per target pass proposing, verifying and
    otherwise, per strategy and phase (the propose column is what a speculator costs the wall clock)."""
    phases = results["setup"]["phases"]
    rows = [
        "| strategy | " + " | ".join(f"{lang}: propose / verify / other" for lang in phases) + " |",
        "|---|" + "---:|" * len(phases),
    ]
    for name, data in results["strategies"].items():
        cells = []
        for lang in phases:
            f = data["phases"][lang]
            parts = [f.get(f"{part}_ms_per_pass") for part in ("propose", "verify", "other")]
            cells.append(" / ".join(_fmt(p, ".1f") for p in parts))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def render_report(results: dict[str, Any]) -> str:
    """Return report.md: setup, the table, goals with measured figures, and the cost figures."""
    setup = results["setup"]
    lines = [
        f"# Drift benchmark ({'quick' if setup.get('quick') else 'full'} run)",
        "",
        f"Command: `{setup['command']}`  ",
        f"Wall time: {setup['wall_seconds']:.0f} s on {setup['machine']['cpus']} CPUs "
        f"({setup['machine']['cpu_model']}); load average {setup['machine']['load_before']} before, "
        f"{setup['machine']['load_after']} after.",
        "",
        f"Target: {setup['target']['name']} ({setup['target']['parameters'] / 1e6:.0f} M parameters).  ",
        f"Static draft: {setup['static_draft'].get('summary', 'not used')}.  ",
        f"Phases (in order): {', '.join(setup['phases'])}; {setup['requests_per_phase']} requests each, "
        f"{setup['max_new_tokens']} new tokens, prompts of {setup['prompt_tokens'][0]}-"
        f"{setup['prompt_tokens'][1]} tokens; sampling: {setup['sampling']}.",
        "",
        table(results),
        "",
        "## Goals (benchmark goals, not test assertions)",
        "",
        "| goal | phase | measured | target | met |",
        "|---|---|---:|---:|---|",
    ]
    for g in results.get("goals", []):
        lines.append(
            f"| {g['goal']} | {g['phase']} | {_fmt(g['measured'])} | {_fmt(g['target'])} | {_fmt(g['met'])} |"
        )
    spread = results.get("noise") or {}
    if spread:
        ratios = " / ".join(_times(spread.get(lang)) for lang in setup["phases"])
        lines += [
            "",
            f"Run noise: target-only served again by a second engine in the same rounds ran at "
            f"{ratios} the first's tokens/s ({' / '.join(setup['phases'])}). A tokens/s goal within that "
            f"spread of its target is not decided by this run.",
        ]
    lines += ["", "## Where decode time went (ms per target pass)", "", time_table(results)]
    costs = results.get("costs")
    if costs:
        lines += ["", "## Why the wall clock looks the way it does (measured in this run)", ""]
        lines.append(
            f"- one target decode step: {costs['target_step_ms']:.1f} ms; one draft step: "
            f"{_fmt(costs.get('draft_step_ms'), '.1f')} ms; draft/target cost ratio c = "
            f"{_fmt(costs.get('draft_target_ratio'), '.2f')}"
        )
        by_proposer = costs.get("proposers") or {}
        if by_proposer:
            cs = "; ".join(
                f"{name} " + ", ".join(f"{c:.3f} ({strategy})" for strategy, c in sorted(runs.items()))
                for name, runs in sorted(by_proposer.items())
            )
            lines.append(f"- c per proposer, as each strategy's controller measured it while serving: {cs}")
        verify = ", ".join(f"q={q}: {v:.2f}x" for q, v in costs["verify_cost_vs_q1"].items())
        lines.append(f"- target verify cost against q tokens, relative to one: {verify}")
        untuned = costs.get("untuned")
        if untuned:
            plain = ", ".join(f"q={q}: {v:.2f}x" for q, v in untuned["verify_cost_vs_q1"].items())
            lines.append(
                f"- the same with plain F.linear (no CPU kernel tuning): one step "
                f"{untuned['target_step_ms']:.1f} ms; {plain}"
            )
        lines.append(
            "- with per-token acceptance a, lookahead k and ratio c, speed-up = "
            "(1 - a^(k+1)) / ((1 - a)(k c + 1)) x verify overhead (Leviathan et al., arXiv 2211.17192)"
        )
    notes = results.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"
