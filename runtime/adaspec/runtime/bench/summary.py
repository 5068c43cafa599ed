"""Per-request records of the drift benchmark, and the pure aggregation of them into figures and goals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adaspec.runtime.strategies import BASELINE


@dataclass(frozen=True)
class RequestRecord:
    """One request served by one strategy."""

    strategy: str
    phase: str  # the corpus language of the phase, e.g. "go"
    index: int  # position of the request in the whole run (all phases), from 0
    generated_tokens: int
    target_forward_passes: int
    drafts: int
    draft_tokens: int
    accepted_tokens: int
    elapsed_s: float
    token_ids: tuple[int, ...]  # [generated_tokens]
    failures: int = 0  # proposer failures that fell back to plain decoding
    propose_s: float = 0.0  # of elapsed_s: propose phases (drafting, catch-up, the controller)
    verify_s: float = 0.0  # of elapsed_s: the target's verification passes


def figures(records: Sequence[RequestRecord]) -> dict[str, float]:
    """Return pooled figures over records: tokens per target pass, acceptance, tokens/s (NaN if empty).

    Pooled (total generated / total passes), not a mean of per-request ratios, so long and short
    requests weigh by their tokens, as in vLLM's counters.
    """
    gen = sum(r.generated_tokens for r in records)
    passes = sum(r.target_forward_passes for r in records)
    drafted = sum(r.draft_tokens for r in records)
    accepted = sum(r.accepted_tokens for r in records)
    elapsed = sum(r.elapsed_s for r in records)
    nan = float("nan")
    return {
        "requests": float(len(records)),
        "generated_tokens": float(gen),
        "mean_accepted_length": gen / passes if passes else nan,
        "acceptance_rate": accepted / drafted if drafted else nan,
        "tokens_per_second": gen / elapsed if elapsed > 0 else nan,
        "proposer_failures": float(sum(r.failures for r in records)),
        **pass_times(records),
    }


def pass_times(records: Sequence[RequestRecord]) -> dict[str, float]:
    """Where a target pass's share of decode time went, in ms per pass: proposing (drafts, their catch-up,
    the controller), verifying (the target), and the rest (learners' and the controller's observing,
    bookkeeping); NaN when no pass was made."""
    passes = sum(r.target_forward_passes for r in records)
    if not passes:
        nan = float("nan")
        return {"propose_ms_per_pass": nan, "verify_ms_per_pass": nan, "other_ms_per_pass": nan}
    propose = sum(r.propose_s for r in records)
    verify = sum(r.verify_s for r in records)
    other = sum(r.elapsed_s for r in records) - propose - verify
    return {
        "propose_ms_per_pass": 1000 * propose / passes,
        "verify_ms_per_pass": 1000 * verify / passes,
        "other_ms_per_pass": 1000 * max(other, 0.0) / passes,
    }


def windows(records: Sequence[RequestRecord], size: int) -> list[list[RequestRecord]]:
    """Split records (in request order) into consecutive windows of `size` (the last may be shorter)."""
    if size <= 0:
        raise ValueError(f"window size must be > 0, got {size!r}")
    ordered = sorted(records, key=lambda r: r.index)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def summarize(
    records: Sequence[RequestRecord], phases: Sequence[str], strategies: Sequence[str], window: int = 8
) -> dict[str, Any]:
    """Return `strategies.<name>.phases.<lang>` figures, speed-ups and token matches, with windows.

    `speedup_vs_target_only` divides by target-only's tokens/s in the same phase of the same run;
    `tokens_match_target_only` is True when every request produced target-only's exact tokens
    (meaningful for greedy runs; None when target-only was not run).
    """
    by_key: dict[tuple[str, str], list[RequestRecord]] = {}
    for r in records:
        by_key.setdefault((r.strategy, r.phase), []).append(r)
    base_tokens = {(r.phase, r.index): r.token_ids for r in records if r.strategy == BASELINE}
    out: dict[str, Any] = {}
    for name in strategies:
        phase_out: dict[str, Any] = {}
        for lang in phases:
            recs = sorted(by_key.get((name, lang), []), key=lambda r: r.index)
            fig: dict[str, Any] = figures(recs)
            base = figures(by_key.get((BASELINE, lang), []))["tokens_per_second"]
            fig["speedup_vs_target_only"] = fig["tokens_per_second"] / base if base == base and base else None
            if base_tokens:
                matches = sum(1 for r in recs if base_tokens.get((lang, r.index)) == r.token_ids)
                fig["tokens_match_target_only"] = matches == len(recs)
                fig["requests_matching_target_only"] = matches
            else:
                fig["tokens_match_target_only"] = None
            fig["windows"] = [
                {"first_request": w[0].index, "last_request": w[-1].index, **figures(w)}
                for w in windows(recs, window)
            ]
            phase_out[lang] = fig
        out[name] = {"phases": phase_out}
    return out


def _last_third(recs: Sequence[RequestRecord]) -> list[RequestRecord]:
    ordered = sorted(recs, key=lambda r: r.index)
    return ordered[len(ordered) - max(1, len(ordered) // 3) :]


def _mal(recs: Sequence[RequestRecord]) -> float:
    return figures(recs)["mean_accepted_length"]


# The baseline served a second time, by an engine of its own, in every request's round: the ratio of the two
# copies' tokens/s is the run's noise between engines of one strategy (weight placement, what ran before)
CONTROL = f"{BASELINE} (again)"


def noise(records: Sequence[RequestRecord], phases: Sequence[str]) -> dict[str, float]:
    """Per phase, the control copy's tokens/s over the baseline's (1.0: no noise between two engines of
    one strategy); empty when the control was not run."""
    if not any(r.strategy == CONTROL for r in records):
        return {}
    out = {}
    for lang in phases:
        a = figures([r for r in records if r.strategy == CONTROL and r.phase == lang])["tokens_per_second"]
        b = figures([r for r in records if r.strategy == BASELINE and r.phase == lang])["tokens_per_second"]
        out[lang] = _ratio(a, b)
    return out


# The hybrids and what each runs alone (strategies named as their proposers), and the learned drafts.
HYBRIDS = {"hybrid": ("static", "adaptive", "suffix"), "hybrid-feature": ("static", "feature", "suffix")}
LEARNED = ("adaptive", "feature")
BEST_PEER = "arctic-suffix"  # the strongest model-free peer measured (SuffixDecoding)
RECOVERY_REQUESTS = 8  # a learned draft's requests after a shift to be back at 90% of its first phase


def goals(records: Sequence[RequestRecord], phases: Sequence[str], window: int = 8) -> list[dict[str, Any]]:
    """Evaluate the adaptive-speculator issue's goals from the records; each item: goal, phase, measured,
    target, met. "Last third": the last third of a drifted phase's requests (every phase after the first).

    Goals whose strategies were not run are left out. `met` is None when a figure is undefined.
    """
    by: dict[tuple[str, str], list[RequestRecord]] = {}
    for r in records:
        by.setdefault((r.strategy, r.phase), []).append(r)
    ran = {r.strategy for r in records}
    result: list[dict[str, Any]] = []

    def add(goal: str, phase: str, measured: float, target: float, at_most: bool = False) -> None:
        ok = None if measured != measured or target != target else measured >= target
        if ok is not None and at_most:
            ok = measured <= target
        result.append({"goal": goal, "phase": phase, "measured": measured, "target": target, "met": ok})

    def tps(name: str, lang: str, recs: Sequence[RequestRecord] | None = None) -> float:
        return figures(by.get((name, lang), []) if recs is None else recs)["tokens_per_second"]

    def tail(name: str, lang: str) -> list[RequestRecord]:
        return _last_third(by.get((name, lang), []))

    drifted = phases[1:]
    for h, parts in HYBRIDS.items():
        if h not in ran:
            continue
        for lang in drifted if BEST_PEER in ran else ():
            add(
                f"{h} / {BEST_PEER} mean accepted length, last third",
                lang,
                _ratio(_mal(tail(h, lang)), _mal(tail(BEST_PEER, lang))),
                1.15,
            )
            add(
                f"{h} / {BEST_PEER} tokens per second, last third",
                lang,
                _ratio(tps(h, lang, tail(h, lang)), tps(BEST_PEER, lang, tail(BEST_PEER, lang))),
                1.15,
            )
        for lang in phases if BASELINE in ran else ():
            add(f"{h} / target-only tokens per second", lang, _ratio(tps(h, lang), tps(BASELINE, lang)), 2.5)
        if "static" in ran and phases:
            first = phases[0]
            add(f"{h} / static tokens per second", first, _ratio(tps(h, first), tps("static", first)), 0.98)
        alone = [p for p in parts if p in ran]
        for lang in phases if alone else ():
            best = max(alone, key=lambda p: _nan_low(tps(p, lang)))
            add(
                f"{h} / best of its parts alone ({best}) tokens per second",
                lang,
                _ratio(tps(h, lang), tps(best, lang)),
                0.98,
            )
    for learned in (name for name in LEARNED if name in ran):
        for lang in drifted if "static" in ran else ():
            add(
                f"{learned} / static mean accepted length, last third",
                lang,
                _ratio(_mal(tail(learned, lang)), _mal(tail("static", lang))),
                1.5,
            )
        for lang in drifted:
            need = 0.9 * _mal(by.get((learned, phases[0]), []))
            add(
                f"{learned} requests to reach 90% of its {phases[0]} accepted length "
                f"(<= {RECOVERY_REQUESTS})",
                lang,
                float(recovery_requests(by.get((learned, lang), []), need, window)),
                float(RECOVERY_REQUESTS),
                at_most=True,
            )
            if need != need:
                result[-1]["met"] = None
    return result


def _nan_low(x: float) -> float:
    return x if x == x else float("-inf")


def recovery_requests(recs: Sequence[RequestRecord], need: float, window: int) -> int:
    """Requests into a phase until a trailing window of `window` reaches `need` (len+1 when never)."""
    ordered = sorted(recs, key=lambda r: r.index)
    for end in range(1, len(ordered) + 1):
        if _mal(ordered[max(0, end - window) : end]) >= need:
            return end
    return len(ordered) + 1


def _ratio(a: float, b: float) -> float:
    return a / b if b == b and b else float("nan")
