"""train-draft's recipe pieces: cache key, LR schedule, student initialisation, KD loss, step budget and
time cap, saving."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from adaspec.runtime.artifacts import read_manifest
from adaspec.runtime.models import tokenizer_fingerprint
from adaspec.runtime.train_draft import (
    DraftRecipe,
    TrainReport,
    build_student,
    cached_report,
    draft_report,
    kd_loss,
    lr_scale,
    recipe_hash,
    save_draft,
    train,
)
from adaspec.runtime.workloads import CorpusSpec, WorkloadError, is_heldout, list_corpus


def tiny_target() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


def corpus_dir(tmp_path: Path, files: int = 20) -> Path:
    for i in range(files):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n" * 5)
    return tmp_path


def test_recipe_hash_changes_with_recipe_and_corpus(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (tmp_path / "src").mkdir()
    corpus = list_corpus(CorpusSpec("python", corpus_dir(tmp_path / "src")))
    recipe = DraftRecipe()
    assert recipe_hash(recipe, target, corpus) == recipe_hash(DraftRecipe(), target, corpus)
    assert recipe_hash(recipe, target, corpus) != recipe_hash(replace(recipe, seed=1), target, corpus)
    assert recipe_hash(recipe, target, corpus) != recipe_hash(replace(recipe, steps=10), target, corpus)
    # the time cap is not the recipe: a different cap names the same draft
    assert recipe_hash(recipe, target, corpus) == recipe_hash(
        replace(recipe, budget_minutes=1), target, corpus
    )
    fewer = replace(corpus, files=corpus.files[1:])
    assert recipe_hash(recipe, target, corpus) != recipe_hash(recipe, target, fewer)


def test_lr_schedule_runs_over_steps() -> None:
    assert [lr_scale(s, 100, 10) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear warm-up
    assert lr_scale(10, 100, 10) == 1.0  # the cosine starts at the peak
    assert lr_scale(55, 100, 10) == pytest.approx(0.5)  # half-way through the decay
    assert lr_scale(99, 100, 10) == 0.05 and lr_scale(500, 100, 10) == 0.05  # the floor
    decay = [lr_scale(s, 100, 10) for s in range(10, 100)]
    assert decay == sorted(decay, reverse=True)
    # the same step of a longer recipe is earlier in its decay: the schedule scales with the step count
    assert lr_scale(50, 1000, 10) > lr_scale(50, 100, 10)
    assert lr_scale(0, 5, 0) == 1.0  # no warm-up


def test_recipe_refuses_out_of_range_values() -> None:
    with pytest.raises(ValueError, match="recipe steps must be >= 1, got 0"):
        DraftRecipe(steps=0)
    with pytest.raises(ValueError, match="recipe budget_minutes must be > 0, got -1"):
        DraftRecipe(budget_minutes=-1)
    with pytest.raises(ValueError, match="recipe warmup_steps must be >= 0, got -1"):
        DraftRecipe(warmup_steps=-1)


def test_student_copies_the_target_and_freezes_embeddings() -> None:
    target = tiny_target()
    student = build_student(target, layers=2)
    assert student.config.num_hidden_layers == 2
    t_sd, s_sd = target.state_dict(), student.state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.1.mlp.up_proj.weight", "model.norm.weight"):
        assert torch.equal(t_sd[name], s_sd[name])
    frozen = {n for n, p in student.named_parameters() if not p.requires_grad}
    assert frozen == {"model.embed_tokens.weight"}  # tied: the head is the same tensor
    with pytest.raises(ValueError, match="layers must be in 1..3, got 4"):
        build_student(target, layers=4)


def test_kd_loss_is_zero_against_itself_and_positive_otherwise() -> None:
    logits = torch.randn(2, 5, 64)  # [batch, seq, vocab]
    assert float(kd_loss(logits, logits)) == pytest.approx(0.0, abs=1e-5)
    assert float(kd_loss(torch.zeros_like(logits), logits)) > 0.01


def test_saved_draft_is_found_by_its_recipe_hash(tmp_path: Path) -> None:
    target_dir = tmp_path / "target"
    target_dir.mkdir()
    (target_dir / "tokenizer.json").write_text('{"model": {}}')
    student = build_student(tiny_target(), layers=1)
    report = TrainReport("abc123", 10, 5, 0, 1, 1, 16, 0.5, "steps", 1.0, 2.0, 1.5, 0.1, 0.2, ["/src/a.py"])
    out = save_draft(student, target_dir, tmp_path / "draft", DraftRecipe(), report)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == {"config.json", "model.safetensors", "tokenizer.json"}
    assert draft_report(manifest)["size_bytes"] == (out / "model.safetensors").stat().st_size
    # one revision format: the static draft loads through the revision checks (serve, adapt)
    checked = read_manifest(out, tokenizer_fingerprint(target_dir))
    assert (checked.revision, checked.parent) == ("static", None)
    assert checked.metrics["heldout_top1_agreement"] == 0.2
    assert cached_report(out, "abc123") is not None
    assert cached_report(out, "other") is None
    reloaded = LlamaForCausalLM.from_pretrained(str(out))
    assert torch.equal(reloaded.model.norm.weight, student.model.norm.weight)


def tiny_target_dir(tmp_path: Path) -> Path:
    """A tiny Llama target with a word-level tokenizer, saved as an HF directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<eos>", "def", "return", "f", "(", ")", ":", "x", "+", "1", "=", "\n"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    out = tmp_path / "target"
    target = tiny_target()
    target.save_pretrained(str(out))
    fast.save_pretrained(str(out))
    return out


def ticking(seconds_per_call: float) -> Callable[[], float]:
    """A clock that advances `seconds_per_call` at every reading."""
    ticks = itertools.count()
    return lambda: next(ticks) * seconds_per_call


@pytest.fixture
def tiny_setup(tmp_path: Path) -> tuple[Path, CorpusSpec]:
    src = tmp_path / "src"
    src.mkdir()
    corpus_dir(src, 40)
    return tiny_target_dir(tmp_path), CorpusSpec("python", src)


TINY = DraftRecipe(layers=1, seq_len=8, batch_size=2, steps=3, warmup_steps=1, eval_sequences=2)


def test_train_end_to_end_on_a_tiny_target(tmp_path: Path, tiny_setup: tuple[Path, CorpusSpec]) -> None:
    target_dir, spec = tiny_setup
    student, _, report = train(target_dir, spec, TINY)
    assert (report.steps, report.planned_steps, report.stopped_by) == (3, 3, "steps")
    assert report.tokens == 3 * 16
    assert report.training_files and not any(is_heldout(f) for f in report.training_files)
    assert student.config.num_hidden_layers == 1
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.py").write_text("x = 1\n")
    with pytest.raises(WorkloadError, match="training split|held-out"):
        train(target_dir, CorpusSpec("python", few), TINY)


def test_the_step_count_not_the_clock_decides_the_draft(tiny_setup: tuple[Path, CorpusSpec]) -> None:
    target_dir, spec = tiny_setup
    fast, _, fast_report = train(target_dir, spec, TINY, clock=ticking(0.001))
    slow, _, slow_report = train(target_dir, spec, TINY, clock=ticking(600.0))  # a loaded machine, in the cap
    assert fast_report.stopped_by == slow_report.stopped_by == "steps"
    assert fast_report.steps == slow_report.steps == TINY.steps
    slow_state = slow.state_dict()
    assert all(torch.equal(v, slow_state[k]) for k, v in fast.state_dict().items())  # the same draft


def test_the_time_cap_stops_training_and_says_so(
    tmp_path: Path, tiny_setup: tuple[Path, CorpusSpec], caplog: pytest.LogCaptureFixture
) -> None:
    target_dir, spec = tiny_setup
    recipe = replace(TINY, steps=50, budget_minutes=0.05)  # a 3 s cap, the clock ticks 1 s per reading
    seen: list[int] = []
    with caplog.at_level(logging.WARNING, logger="adaspec.train_draft"):
        student, _, report = train(target_dir, spec, recipe, lambda s, *_: seen.append(s), ticking(1.0))
    assert report.stopped_by == "time_cap" and report.planned_steps == 50
    assert 1 <= report.steps < 50 and seen == list(range(1, report.steps + 1))
    assert "event=train_draft_time_cap" in caplog.text and "planned_steps=50" in caplog.text
    out = save_draft(student, target_dir, tmp_path / "draft", recipe, report)
    manifest = json.loads((out / "manifest.json").read_text())
    assert draft_report(manifest)["stopped_by"] == "time_cap"  # recorded in the manifest
    digest = report.recipe_hash
    assert cached_report(out, digest, budget_minutes=0.05) is not None  # the same cap would stop it again
    assert cached_report(out, digest, budget_minutes=60.0) is None  # a larger cap may complete it: retrain
    with pytest.raises(WorkloadError, match="no training step fitted in the time cap"):
        train(target_dir, spec, recipe, clock=ticking(1000.0))
