"""train-draft's recipe pieces: cache key, data windows, split, student initialisation, KD loss, saving."""

from __future__ import annotations

import json
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
    batches,
    build_student,
    cached_report,
    draft_report,
    kd_loss,
    recipe_hash,
    save_draft,
    token_stream,
    training_files,
)
from adaspec.runtime.workloads import CorpusSpec, is_heldout, list_corpus


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
    assert recipe_hash(recipe, target, corpus) != recipe_hash(
        replace(recipe, budget_minutes=1), target, corpus
    )
    fewer = replace(corpus, files=corpus.files[1:])
    assert recipe_hash(recipe, target, corpus) != recipe_hash(recipe, target, fewer)


def test_training_never_reads_held_out_files(tmp_path: Path) -> None:
    corpus = list_corpus(CorpusSpec("python", corpus_dir(tmp_path, 40)))
    files = training_files(corpus)
    assert files and not any(is_heldout(f) for f in files)
    used: list[str] = []
    stream = token_stream(
        corpus, files, lambda s: [len(w) % 60 for w in s.split()], eos=63, seed=0, used=used
    )
    windows = list(batches(stream, batch_size=2, seq_len=8))
    assert all(w.shape == (2, 8) for w in windows)
    assert set(used) <= set(files) and len(used) == len(files)


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
    report = TrainReport("abc123", 10, 5, 0, 1, 16, 0.5, 1.0, 2.0, 1.5, 0.1, 0.2, ["/src/a.py"])
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


def test_train_end_to_end_on_a_tiny_target(tmp_path: Path) -> None:
    from adaspec.runtime.train_draft import train
    from adaspec.runtime.workloads import WorkloadError

    target_dir = tiny_target_dir(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    corpus_dir(src, 40)
    recipe = DraftRecipe(
        layers=1, seq_len=8, batch_size=2, budget_minutes=0.05, max_steps=3, eval_sequences=2
    )
    student, _, report = train(target_dir, CorpusSpec("python", src), recipe)
    assert 1 <= report.steps <= 3 and report.tokens == report.steps * 16
    assert report.training_files and not any(is_heldout(f) for f in report.training_files)
    assert student.config.num_hidden_layers == 1
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.py").write_text("x = 1\n")
    with pytest.raises(WorkloadError, match="training split|held-out"):
        train(target_dir, CorpusSpec("python", few), recipe)
