"""`adaspec train-draft`'s handler: the recipe it builds from the flags, and how it reports a time cap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adaspec.cli.main import main
from adaspec.runtime import train_draft
from adaspec.runtime.bench import commands
from adaspec.runtime.train_draft import DraftRecipe
from adaspec.runtime.workloads import CorpusSpec


def fake_manifest(steps: int, planned: int, stopped_by: str) -> dict[str, Any]:
    report = {
        "recipe_hash": "0" * 64,
        "size_bytes": 1,
        "parameters": 2,
        "trainable_parameters": 1,
        "seconds": 1.0,
        "steps": steps,
        "planned_steps": planned,
        "stopped_by": stopped_by,
        "tokens": 16 * steps,
        "final_train_kl": 1.0,
        "eval_kl_before": 2.0,
        "eval_kl_after": 1.5,
        "eval_top1_agreement_before": 0.1,
        "eval_top1_agreement_after": 0.2,
        "training_files": ["/src/a.pl"],
    }
    return {"training_window": {"report": report}}


@pytest.fixture
def recipes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[CorpusSpec, DraftRecipe]]:
    """Stand in for training: record the (corpus, recipe) train-draft asks for; report `steps` steps done."""
    seen: list[tuple[CorpusSpec, DraftRecipe]] = []

    def ensure_draft(
        target: Path, spec: CorpusSpec, out: Path, recipe: DraftRecipe
    ) -> tuple[Path, dict[str, Any], bool]:
        seen.append((spec, recipe))
        done = recipe.steps if recipe.budget_minutes >= 1 else 2
        return out, fake_manifest(done, recipe.steps, "steps" if done == recipe.steps else "time_cap"), True

    monkeypatch.setattr(train_draft, "ensure_draft", ensure_draft)
    monkeypatch.setattr(commands, "resolve_target", lambda text: tmp_path)
    return seen


def test_steps_and_cap_flags_reach_the_recipe(
    recipes: list[tuple[CorpusSpec, DraftRecipe]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train-draft", "--target", "t", "--out", str(tmp_path / "d"), "--corpus", f"perl:.pl={tmp_path}"]
    assert main(base) == 0
    assert main([*base, "--steps", "7", "--budget-minutes", "5"]) == 0
    (spec, default), (_, given) = recipes
    assert (spec.lang, spec.extensions, default.lang) == ("perl", (".pl",), "perl")
    assert (default.steps, default.budget_minutes) == (DraftRecipe.steps, DraftRecipe.budget_minutes)
    assert (given.steps, given.budget_minutes) == (7, 5.0)
    out = capsys.readouterr()
    assert "7 of 7 steps (stopped by steps)" in out.out and "warning" not in out.err


def test_a_time_cap_hit_is_reported(
    recipes: list[tuple[CorpusSpec, DraftRecipe]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train-draft", "--target", "t", "--out", str(tmp_path / "d"), "--corpus", f"python={tmp_path}"]
    assert main([*argv, "--steps", "9", "--budget-minutes", "0.5"]) == 0
    out = capsys.readouterr()
    assert "2 of 9 steps (stopped by time_cap)" in out.out
    assert "the time cap stopped training after 2 of the recipe's 9 steps" in out.err
    assert "--budget-minutes" in out.err


def test_help_states_the_recipe_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train-draft", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps help lines
    assert f"(default: the recipe's, {DraftRecipe.steps})" in text
    assert f"wall-clock cap on training (default {DraftRecipe.budget_minutes:g})" in text
    assert "perl:.pl,.pm=/src" in text
