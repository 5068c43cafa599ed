"""train-draft's recipe pieces: cache key, LR schedule, student initialisation, KD loss, step budget and
time cap, saving; the feature draft's recipe, revision and loading."""

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

from adaspec.cli.main import main
from adaspec.runtime.artifacts import ArtifactError, ArtifactMismatch, read_manifest
from adaspec.runtime.models import tokenizer_fingerprint
from adaspec.runtime.proposers.base import RequestInfo
from adaspec.runtime.proposers.feature import FeatureProposer, target_features
from adaspec.runtime.proposers.vocab import VOCAB_FILE, draft_counts
from adaspec.runtime.train_draft import (
    DraftRecipe,
    TrainReport,
    build_student,
    cached_report,
    draft_report,
    ensure_draft,
    kd_loss,
    lr_scale,
    recipe_hash,
    save_draft,
    train,
)
from adaspec.runtime.train_feature import (
    FeatureRecipe,
    ensure_feature_draft,
    feature_config_for,
    load_feature_draft,
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
    # with its training tokens' counts: one more checksummed file, read back by serve's loader
    counts = torch.arange(student.config.vocab_size, dtype=torch.float64)
    out = save_draft(student, target_dir, tmp_path / "ranked", DraftRecipe(), report, counts)
    assert VOCAB_FILE in read_manifest(out, tokenizer_fingerprint(target_dir)).files
    assert torch.equal(draft_counts(out, student.config.vocab_size), counts)  # type: ignore[arg-type]
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
    student, _, report, counts = train(target_dir, spec, TINY)
    assert (report.steps, report.planned_steps, report.stopped_by) == (3, 3, "steps")
    assert report.tokens == 3 * 16
    # every trained-on token is counted (they rank the draft's reduced vocabulary)
    assert counts.shape == (student.config.vocab_size,) and float(counts.sum()) == report.tokens
    assert report.vocab_size == student.config.vocab_size // 4 and 0 < report.vocab_coverage <= 1  # type: ignore[operator]
    assert report.training_files and not any(is_heldout(f) for f in report.training_files)
    assert student.config.num_hidden_layers == 1
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.py").write_text("x = 1\n")
    with pytest.raises(WorkloadError, match="training split|held-out"):
        train(target_dir, CorpusSpec("python", few), TINY)


def test_the_step_count_not_the_clock_decides_the_draft(tiny_setup: tuple[Path, CorpusSpec]) -> None:
    target_dir, spec = tiny_setup
    fast, _, fast_report, _ = train(target_dir, spec, TINY, clock=ticking(0.001))
    slow, _, slow_report, _ = train(
        target_dir, spec, TINY, clock=ticking(600.0)
    )  # a loaded machine, in the cap
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
        student, _, report, _counts = train(
            target_dir, spec, recipe, lambda s, *_: seen.append(s), ticking(1.0)
        )
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


TINY_FEATURE = FeatureRecipe(
    seq_len=8, batch_size=2, steps=4, warmup_steps=1, vocab_size=32, train_depth=2, eval_sequences=2
)


def test_the_feature_draft_trains_saves_and_loads_as_a_checked_revision(
    tmp_path: Path, tiny_setup: tuple[Path, CorpusSpec]
) -> None:
    target_dir, spec = tiny_setup
    out, manifest, built = ensure_feature_draft(target_dir, spec, tmp_path / "feature", TINY_FEATURE, False)
    report = draft_report(manifest)
    assert built and (report["steps"], report["stopped_by"]) == (4, "steps")
    assert report["training_files"] and not any(is_heldout(f) for f in report["training_files"])
    assert manifest["training_window"]["kind"] == "feature-draft" and 0 < report["vocab_coverage"] <= 1
    assert set(manifest["files"]) == {"feature.safetensors"}
    again = ensure_feature_draft(target_dir, spec, tmp_path / "feature", TINY_FEATURE, False)
    assert again[2] is False  # the same recipe hash: reused
    static = DraftRecipe(layers=1, seq_len=8, batch_size=2, steps=4, warmup_steps=1, eval_sequences=2)
    corpus = list_corpus(spec)
    assert recipe_hash(TINY_FEATURE, target_dir, corpus) != recipe_hash(static, target_dir, corpus)

    tensors, loaded = load_feature_draft(out, tokenizer_fingerprint(target_dir))
    assert loaded.revision == "static"
    target = LlamaForCausalLM.from_pretrained(str(target_dir)).eval()
    a = FeatureProposer(target, feature_config_for(tensors, background=False))
    a.load_saved(tensors)
    b = FeatureProposer(target, feature_config_for(tensors, background=False))
    b.load_saved(load_feature_draft(out, tokenizer_fingerprint(target_dir))[0])
    ctx = [2, 4, 5, 6, 7, 3, 8]
    for prop in (a, b):
        prop.begin(RequestInfo(prompt_ids=tuple(ctx)))
        prop.observe_features(0, target_features(target, ctx)[:-1])
    assert a.propose(ctx, 4, None).token_ids == b.propose(ctx, 4, None).token_ids

    static_dir = ensure_draft(target_dir, spec, tmp_path / "static", static, False)[0]
    with pytest.raises(ArtifactError, match="not a feature draft"):
        load_feature_draft(static_dir, tokenizer_fingerprint(target_dir))
    (out / "feature.safetensors").write_bytes(b"tampered")
    with pytest.raises(ArtifactMismatch, match="sha256"):
        load_feature_draft(out, tokenizer_fingerprint(target_dir))


def test_train_draft_arch_feature_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):  # the recipe's 256-token windows need a few thousand tokens held out
        (src / f"m{i}.py").write_text(f"def f{i}():\n    return {i}\n" * 40)
    target_dir = tiny_target_dir(tmp_path)
    argv = ["train-draft", "--arch", "feature", "--target", str(target_dir), "--corpus", f"python={src}"]
    argv += ["--out", str(tmp_path / "feature"), "--steps", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trained now" in out and "2 of 2 steps (stopped by steps)" in out
    assert "4-token chain" in out and "reduced vocabulary covers 100.0%" in out  # 64 ids: all of them
    assert main(argv) == 0 and "reused: same recipe hash" in capsys.readouterr().out
    load_feature_draft(tmp_path / "feature", tokenizer_fingerprint(target_dir))
