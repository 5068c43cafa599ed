"""The drift benchmark's aggregation and writer: figures, windows, goals, and the three output files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adaspec.runtime.bench.report import PARTIAL_FILE, clear_outputs, table, write_all, write_partial
from adaspec.runtime.bench.summary import (
    CONTROL,
    RequestRecord,
    figures,
    goals,
    noise,
    recovery_requests,
    summarize,
    windows,
)

PHASES = ["python", "go"]
MAL = {  # tokens per target pass by (strategy, phase)
    ("target-only", "python"): 1,
    ("target-only", "go"): 1,
    ("static", "python"): 2,
    ("static", "go"): 1,
    ("ngram", "python"): 1,
    ("ngram", "go"): 1,
    ("hybrid", "python"): 2,
    ("hybrid", "go"): 2,
}


def make_records(per_phase: int = 9, tokens: int = 12) -> list[RequestRecord]:
    records = []
    for p, lang in enumerate(PHASES):
        for i in range(per_phase):
            index = p * per_phase + i
            for name in ("target-only", "static", "ngram", "hybrid"):
                mal = MAL[(name, lang)]
                passes = tokens // mal
                ids = tuple(range(index, index + tokens))
                if name == "ngram" and index == 0:
                    ids = (999,) + ids[1:]  # one mismatching request
                records.append(
                    RequestRecord(
                        strategy=name,
                        phase=lang,
                        index=index,
                        generated_tokens=tokens,
                        target_forward_passes=passes,
                        drafts=passes if name != "target-only" else 0,
                        draft_tokens=4 * passes if name != "target-only" else 0,
                        accepted_tokens=tokens - passes,
                        elapsed_s=passes * 0.1,
                        token_ids=ids,
                        propose_s=passes * 0.02 if name != "target-only" else 0.0,
                        verify_s=passes * 0.07,
                    )
                )
    return records


def results_for(records: list[RequestRecord]) -> dict[str, Any]:
    strategies = ["target-only", "static", "ngram", "hybrid"]
    return {
        "setup": {
            "command": "adaspec bench drift --quick",
            "quick": True,
            "phases": PHASES,
            "requests_per_phase": 9,
            "max_new_tokens": 12,
            "prompt_tokens": [256, 384],
            "sampling": "greedy",
            "window": 4,
            "wall_seconds": 12.5,
            "target": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct", "parameters": 134_515_008},
            "static_draft": {"summary": "a test draft"},
            "machine": {"cpus": 2, "cpu_model": "test", "load_before": "1.0", "load_after": "2.0"},
        },
        "strategies": summarize(records, PHASES, strategies, window=4),
        "goals": goals(records, PHASES, window=4),
        "costs": {
            "target_step_ms": 40.0,
            "draft_step_ms": 6.0,
            "draft_target_ratio": 0.15,
            "verify_cost_vs_q1": {"1": 1.0, "5": 1.3},
            "proposers": {"suffix": {"hybrid": 0.004}, "static": {"hybrid": 0.15, "static": 0.14}},
        },
        "notes": [],
    }


def test_figures_are_pooled_over_tokens() -> None:
    recs = make_records()
    hybrid_go = [r for r in recs if r.strategy == "hybrid" and r.phase == "go"]
    f = figures(hybrid_go)
    assert f["mean_accepted_length"] == pytest.approx(2.0)
    assert f["acceptance_rate"] == pytest.approx(0.25)  # 6 accepted of 24 drafted per request
    assert f["tokens_per_second"] == pytest.approx(12 / 0.6)
    assert figures([])["mean_accepted_length"] != figures([])["mean_accepted_length"]  # NaN when empty


def test_figures_say_where_each_passs_time_went() -> None:
    recs = make_records()
    f = figures([r for r in recs if r.strategy == "hybrid" and r.phase == "go"])
    assert (f["propose_ms_per_pass"], f["verify_ms_per_pass"]) == (pytest.approx(20.0), pytest.approx(70.0))
    assert f["other_ms_per_pass"] == pytest.approx(10.0)  # the rest of the 100 ms a pass took
    plain = figures([r for r in recs if r.strategy == "target-only" and r.phase == "go"])
    assert plain["propose_ms_per_pass"] == 0.0 and plain["other_ms_per_pass"] == pytest.approx(30.0)
    empty = figures([])["propose_ms_per_pass"]
    assert empty != empty  # NaN: no pass


def test_summary_has_the_contracted_keys_speedups_and_windows() -> None:
    s = summarize(make_records(), PHASES, ["target-only", "static", "ngram", "hybrid"], window=4)
    go = s["hybrid"]["phases"]["go"]
    for key in ("mean_accepted_length", "acceptance_rate", "tokens_per_second", "speedup_vs_target_only"):
        assert key in go
    assert go["speedup_vs_target_only"] == pytest.approx(2.0)
    assert go["tokens_match_target_only"] is True
    assert s["ngram"]["phases"]["python"]["tokens_match_target_only"] is False
    assert s["ngram"]["phases"]["python"]["requests_matching_target_only"] == 8
    assert [len(range(w["first_request"], w["last_request"] + 1)) for w in go["windows"]] == [4, 4, 1]
    with pytest.raises(ValueError, match="window size must be > 0, got 0"):
        windows([], 0)


def _records(mal: dict[tuple[str, str], list[float]], tokens: int = 12) -> list[RequestRecord]:
    """One record per request: mal[(strategy, phase)][i] tokens per pass, 0.1 s a pass."""
    out, offsets = [], {lang: i * 100 for i, lang in enumerate(PHASES)}
    for (name, lang), per_request in mal.items():
        for i, m in enumerate(per_request):
            passes = round(tokens / m)
            out.append(
                RequestRecord(name, lang, offsets[lang] + i, tokens, passes, 0, 0, 0, passes * 0.1, ())
            )
    return out


def test_goals_are_the_issues_and_computed_from_the_records() -> None:
    n = 6  # requests per phase; the last third is the last 2
    mal = {
        ("target-only", "python"): [1.0] * n,
        ("target-only", "go"): [1.0] * n,
        ("static", "python"): [2.0] * n,
        ("static", "go"): [1.0] * n,
        ("arctic-suffix", "python"): [2.0] * n,
        ("arctic-suffix", "go"): [2.0] * n,
        ("suffix", "python"): [2.0] * n,
        ("suffix", "go"): [2.0] * n,
        ("feature", "python"): [3.0] * n,
        ("feature", "go"): [1.0, 1.0, 1.0, 3.0, 3.0, 3.0],  # back to 90% of 3.0 at the 6th request
        ("hybrid-feature", "python"): [3.0] * n,
        ("hybrid-feature", "go"): [2.0, 2.0, 2.0, 2.0, 3.0, 3.0],
    }
    by = {(g["goal"], g["phase"]): g for g in goals(_records(mal), PHASES, window=2)}
    peer = by[("hybrid-feature / arctic-suffix mean accepted length, last third", "go")]
    assert peer["measured"] == pytest.approx(1.5) and peer["target"] == 1.15 and peer["met"] is True
    assert by[("hybrid-feature / arctic-suffix tokens per second, last third", "go")][
        "measured"
    ] == pytest.approx(1.5)
    assert by[("hybrid-feature / target-only tokens per second", "python")]["measured"] == pytest.approx(3.0)
    go_speed = by[("hybrid-feature / target-only tokens per second", "go")]
    assert go_speed["measured"] == pytest.approx(72 / 3.2 / 10) and go_speed["met"] is False  # 2.25x < 2.5x
    assert by[("hybrid-feature / static tokens per second", "python")]["measured"] == pytest.approx(1.5)
    best = by[("hybrid-feature / best of its parts alone (feature) tokens per second", "python")]
    assert best["measured"] == pytest.approx(1.0) and best["met"] is True
    learned = by[("feature / static mean accepted length, last third", "go")]
    assert learned["measured"] == pytest.approx(3.0) and learned["met"] is True
    recovery = by[("feature requests to reach 90% of its python accepted length (<= 8)", "go")]
    assert recovery["measured"] == 5 and recovery["met"] is True  # window 2: requests 4-5 average 3.0
    assert not any("hybrid /" in g or g.startswith("adaptive") for g, _ in by)  # not run: no goal


def test_recovery_counts_requests_until_a_window_reaches_the_target() -> None:
    recs = [
        RequestRecord("hybrid", "go", i, 10, passes, 0, 0, 0, 1.0, ())
        for i, passes in enumerate([10, 10, 5, 5, 5, 5])
    ]
    assert recovery_requests(recs, 1.9, window=2) == 4
    assert recovery_requests(recs, 5.0, window=2) == 7  # never: len + 1


def test_write_all_writes_three_files_and_marks_complete(tmp_path: Path) -> None:
    results = results_for(make_records())
    (tmp_path / PARTIAL_FILE).write_text("{}")
    paths = write_all(tmp_path, results)
    assert [p.name for p in paths] == ["results.json", "drift.png", "report.md"]
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["complete"] is True and not (tmp_path / PARTIAL_FILE).exists()
    assert data["strategies"]["hybrid"]["phases"]["go"]["windows"][0]["mean_accepted_length"] == 2.0
    assert (tmp_path / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "report.md").read_text()
    assert "| hybrid | go | 2.00 | 0.25 |" in report and "draft/target cost ratio c = 0.15" in report
    assert (
        "c per proposer" in report
        and "static 0.150 (hybrid), 0.140 (static); suffix 0.004 (hybrid)" in report
    )
    assert table(results).count("\n") == 1 + 4 * 2
    assert "| python: propose / verify / other | go: propose / verify / other |" in report
    assert "| hybrid | 20.0 / 70.0 / 10.0 | 20.0 / 70.0 / 10.0 |" in report


def test_the_baselines_second_copy_gives_the_runs_noise(tmp_path: Path) -> None:
    records = make_records()
    assert noise(records, PHASES) == {}  # no control copy: no figure, and no line in the report
    copy = [
        RequestRecord(CONTROL, r.phase, r.index, r.generated_tokens, r.target_forward_passes, 0, 0, 0, e, ())
        for r in records
        if r.strategy == "target-only"
        for e in [r.elapsed_s * (1.0 if r.phase == "python" else 1.25)]  # go: the copy ran slower
    ]
    spread = noise(records + copy, PHASES)
    assert spread == {"python": pytest.approx(1.0), "go": pytest.approx(0.8)}
    results = results_for(records) | {"noise": spread}
    write_all(tmp_path, results)
    report = (tmp_path / "report.md").read_text()
    assert "ran at 1.00x / 0.80x the first's tokens/s (python / go)" in report
    assert goals(records + copy, PHASES, window=4) == goals(records, PHASES, window=4)  # not a strategy's


def test_partial_results_are_never_presented_as_complete(tmp_path: Path) -> None:
    write_all(tmp_path, results_for(make_records()))
    clear_outputs(tmp_path)
    assert not any(tmp_path.iterdir())
    path = write_partial(tmp_path, {"setup": {}, "records": [{"x": float("nan")}]}, "RuntimeError: boom")
    data = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert data["complete"] is False and data["error"] == "RuntimeError: boom"
    assert data["records"] == [{"x": None}]
    assert not (tmp_path / "results.json").exists()
