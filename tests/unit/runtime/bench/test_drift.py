"""`adaspec bench drift` and `adaspec train-draft` refuse bad input with a named error and exit code 2."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from adaspec.cli.main import CommandError, main
from adaspec.runtime.bench import drift


def test_unknown_strategy_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "drift", "--strategies", "hybrid,medusa", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "['medusa']" in err and "arctic-suffix" in err  # names the bad one and lists the valid ones
    assert not (tmp_path / "results.json").exists()


def test_corpus_without_sources_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README").write_text("no code\n")
    out = tmp_path / "out"
    code = main(["bench", "drift", "--corpus", f"go={empty}", "--out", str(out)])
    assert code == 2
    assert f"go corpus '{empty}' contains no source files" in capsys.readouterr().err
    assert not (out / "results.json").exists()


def test_bad_corpus_argument_for_train_draft(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["train-draft", "--target", str(tmp_path), "--corpus", "python", "--out", str(tmp_path / "d")]
    )
    assert code == 2
    assert "corpus must be LANG=PATH or LANG:.EXT[,.EXT...]=PATH, got 'python'" in capsys.readouterr().err


def test_unknown_language_phase_says_how_to_give_its_endings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "drift", "--corpus", f"perl={tmp_path}", "--out", str(tmp_path / "out")])
    assert code == 2
    assert "unknown corpus language 'perl'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failure_mid_run_leaves_only_a_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"complete": true}')  # from an earlier run

    def failing_run(config: drift.DriftConfig, corpora: Any, partial: dict[str, Any]) -> dict[str, Any]:
        partial["records"].append({"strategy": "hybrid", "phase": "python", "index": 0})
        raise RuntimeError("the engine fell over")

    monkeypatch.setattr(drift, "run", failing_run)
    code = main(["bench", "drift", "--corpus", f"python={src}", "--out", str(out), "--strategies", "hybrid"])
    assert code == 2
    assert "the engine fell over" in capsys.readouterr().err
    assert not (out / "results.json").exists()  # the stale complete file is gone
    partial = json.loads((out / "results.partial.json").read_text())
    assert partial["complete"] is False and len(partial["records"]) == 1


def test_config_presets_and_duplicate_phases() -> None:
    base = dict(
        strategies="hybrid",
        out="o",
        target="smollm2",
        static_draft=None,
        feature_draft=None,
        draft_budget_minutes=1.0,
    )
    args = argparse.Namespace(
        quick=True,
        corpus=["python=/x"],
        requests_per_phase=None,
        max_new_tokens=None,
        temperature=0.0,
        seed=0,
        **base,
    )
    config = drift.config_from_args(args)
    assert (config.requests_per_phase, config.max_new_tokens) == (
        drift.QUICK["requests_per_phase"],
        drift.QUICK["max_new_tokens"],
    )
    args.corpus = ["python=/x", "perl:.pl,.pm=/y"]  # any language, given its endings, is a phase
    assert [(p.lang, p.extensions) for p in drift.config_from_args(args).phases] == [
        ("python", (".py",)),
        ("perl", (".pl", ".pm")),
    ]
    args.corpus = ["python=/x", "python=/y"]
    with pytest.raises(CommandError, match="its own language"):
        drift.config_from_args(args)


def test_each_strategy_serves_from_each_place_in_the_round() -> None:
    names = ["target-only", "suffix", "hybrid"]
    rounds = [drift.round_order(names, i) for i in range(6)]
    assert rounds[0] == names and rounds[1] == ["suffix", "hybrid", "target-only"] and rounds[3] == names
    assert all(sorted(r) == sorted(names) for r in rounds)  # every strategy serves every request
    assert {r.index("hybrid") for r in rounds[:3]} == {0, 1, 2}
    assert drift.round_order([], 5) == []
