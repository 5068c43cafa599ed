"""The replay against the real engine on the real fixture target: same drafts, same accepted tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adaspec.runtime.bench.replay import (
    ReplayError,
    Trace,
    read_traces,
    replay,
    run_replay,
    verify_seconds,
    write_traces,
)
from adaspec.runtime.engine import build_engine

pytestmark = pytest.mark.slow


def _live(fixture_dir: Path, prompts: list[Any], strategy: str, fixed_k: int) -> tuple[list[Trace], Any]:
    engine = build_engine(fixture_dir / "target", strategy=strategy, fixed_k=fixed_k, cpu_kernels=False)
    traces, steps = [], []
    for p in prompts:
        res = engine.generate(list(p.token_ids), max_new_tokens=24, tag=p.lang)
        traces.append(Trace(p.lang, tuple(p.token_ids), tuple(res.token_ids)))
        steps.append(res.steps)
    return traces, steps


@pytest.mark.parametrize("strategy", ["suffix", "ngram", "arctic-suffix"])
def test_replay_takes_the_live_engines_steps(fixture_dir: Path, prompts: list[Any], strategy: str) -> None:
    """With a fixed lookahead the drafts depend only on committed tokens, so every step of the replay
    (drafted, accepted, committed) equals the live run's on the same requests in the same order."""
    chosen = prompts[:6] + prompts[26:32]  # Python, then Go: the shared indexes carry across requests
    traces, live_steps = _live(fixture_dir, chosen, strategy, fixed_k=4)
    engine = build_engine(fixture_dir / "target", strategy="target-only", cpu_kernels=False)
    vocab = engine.vocab
    got = replay(traces, strategy, {1: 0.05, 5: 0.06}, vocab, fixed_k=4)
    passes = sum(len(s) for s in live_steps)
    accepted = sum(st.accepted for s in live_steps for st in s)
    assert sum(f.passes for f in got.values()) == passes
    assert sum(f.accepted for f in got.values()) == accepted
    assert accepted > 0, "the requests give the proposer nothing to match: the test would prove nothing"
    assert set(got) == {"python", "go"}


def test_traces_round_trip_and_learners_are_refused(
    fixture_dir: Path, prompts: list[Any], tmp_path: Path
) -> None:
    traces, _ = _live(fixture_dir, prompts[:2], "suffix", fixed_k=4)
    path = tmp_path / "traces.jsonl"
    write_traces(path, traces)
    assert read_traces(path) == traces
    with pytest.raises(ReplayError, match="adaptive"):
        replay(traces, "hybrid", {1: 0.05}, 2048)
    path.write_text('{"phase": "python"}\n')
    with pytest.raises(ReplayError, match="traces.jsonl:1"):
        read_traces(path)


def test_run_replay_puts_target_only_first_with_the_recorded_cost() -> None:
    traces = [Trace("python", (1, 2, 3, 1, 2), (3, 1, 2, 3, 1, 2, 3, 1))]
    out = run_replay(traces, ["suffix"], {1: 0.1, 2: 0.1, 9: 0.2}, 16, fixed_k={})
    assert list(out) == ["target-only", "suffix"]
    assert out["target-only"]["python"]["estimated_tokens_per_second"] == pytest.approx(10.0)
    assert out["suffix"]["python"]["mean_accepted_length"] > 1.0  # a repeating sequence: suffix matches
    with pytest.raises(ReplayError, match="verify_ms"):
        verify_seconds({"costs": {}})
    assert verify_seconds({"costs": {"verify_ms": {"1": 50.0}}}) == {1: 0.05}


def test_bench_replay_reads_what_bench_drift_wrote(
    fixture_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seam: `bench drift` (greedy) writes traces.jsonl and its costs, and `bench replay` of the same
    fixed-lookahead strategy gives the live run's accepted lengths, phase by phase."""
    import sysconfig

    from adaspec.cli.main import main

    out = tmp_path / "run"
    argv = ["bench", "drift", "--target", str(fixture_dir / "target"), "--strategies", "target-only,ngram"]
    argv += ["--corpus", f"python={sysconfig.get_paths()['stdlib']}", "--requests-per-phase", "3"]
    argv += ["--max-new-tokens", "12", "--out", str(out)]
    assert main(argv) == 0
    live = json.loads((out / "results.json").read_text())
    assert live["setup"]["traces"] == "traces.jsonl"
    assert live["noise"]["python"] > 0  # target-only served again, by an engine of its own
    assert set(live["strategies"]) == {"target-only", "ngram"}  # the copy is not a strategy of the run
    assert len(read_traces(out / "traces.jsonl")) == 3
    capsys.readouterr()
    assert main(["bench", "replay", str(out), "--strategies", "ngram", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["fixed_k"]["ngram"] == live["setup"]["fixed_k"]["ngram"] == 4
    replayed = got["strategies"]["ngram"]["python"]["mean_accepted_length"]
    assert replayed == pytest.approx(live["strategies"]["ngram"]["phases"]["python"]["mean_accepted_length"])
    assert main(["bench", "replay", str(out), "--strategies", "adaptive"]) == 2  # learns from logits
    assert "cannot be replayed" in capsys.readouterr().err


def test_bench_replay_drafts_with_the_static_drafts_reduced_vocabulary(
    fixture_dir: Path, ranked_draft: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A static draft carrying token counts: `bench drift` serves it over its reduced vocabulary, and
    `bench replay --static-draft` reads the same counts, so the replay's static drafts, and so its
    accepted lengths, are the live run's."""
    import sysconfig

    from adaspec.cli.main import main

    out = tmp_path / "run"
    argv = ["bench", "drift", "--target", str(fixture_dir / "target"), "--static-draft", str(ranked_draft)]
    argv += ["--strategies", "target-only,static", "--requests-per-phase", "3", "--max-new-tokens", "12"]
    argv += ["--corpus", f"python={sysconfig.get_paths()['stdlib']}", "--out", str(out)]
    assert main(argv) == 0
    live = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    replay_argv = ["bench", "replay", str(out), "--strategies", "static", "--static-draft", str(ranked_draft)]
    assert main([*replay_argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    replayed = got["strategies"]["static"]["python"]["mean_accepted_length"]
    assert replayed == pytest.approx(live["strategies"]["static"]["phases"]["python"]["mean_accepted_length"])
