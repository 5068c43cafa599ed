"""Tiny Llama-architecture target and draft models trained here, on CPU, from source code on the machine.

`adaspec fixtures --out DIR` writes DIR/target and DIR/draft as Hugging Face directories (safetensors,
tokenizer.json). The target learns Python and Go; the draft is distilled from the target on Python only
(it learns the target's next-token distribution there, as a static draft is made), so a drift to Go is a
real drift for it: held-out greedy agreement about 0.47 on Python against 0.24 on Go. Results are cached
by a hash of the recipe (settings, files, library versions).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import tqdm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from adaspec.runtime.corpus import SourceFile, collect, default_roots
from adaspec.runtime.models import small_llama

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class ModelShape:
    """Size of one tiny Llama."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


@dataclass(frozen=True)
class FixtureRecipe:
    """Everything that determines the fixture models (its hash names the cache entry)."""

    vocab_size: int = 1024
    max_positions: int = 1024
    target: ModelShape = ModelShape(hidden=128, layers=3, heads=4, kv_heads=2, intermediate=384)
    draft: ModelShape = ModelShape(hidden=64, layers=1, heads=2, kv_heads=1, intermediate=192)
    target_langs: tuple[str, ...] = ("python", "go")
    draft_langs: tuple[str, ...] = ("python",)
    bytes_per_lang: int = 1_000_000
    seq_len: int = 96
    batch: int = 8
    # enough for the target to tell the languages apart (loss ~2.5); a weaker one predicts Go almost as
    # it does Python, and its drafts then see no drift
    target_steps: int = 3000
    draft_steps: int = 1000
    lr: float = 3e-3
    seed: int = 0
    versions: dict[str, str] = field(default_factory=dict)

    def digest(self, files: list[SourceFile]) -> str:
        """Short hash of the recipe and the exact training files."""
        blob = json.dumps(
            {"recipe": asdict(self), "files": [(f.lang, f.rel) for f in files]}, sort_keys=True
        ).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def cache_root() -> Path:
    """Where generated models live: $ADASPEC_CACHE or ~/.cache/adaspec."""
    return Path(os.environ.get("ADASPEC_CACHE", Path.home() / ".cache" / "adaspec"))


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE over the given texts, with one end-of-text token (id 0)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok, eos_token=EOS, bos_token=EOS, unk_token=None
    )


def _llama(shape: ModelShape, recipe: FixtureRecipe) -> Any:
    return small_llama(
        recipe.vocab_size,
        shape.hidden,
        shape.layers,
        shape.heads,
        shape.kv_heads,
        shape.intermediate,
        recipe.max_positions,
        seed=recipe.seed,
    )


def _train_lm(
    model: Any,
    stream: torch.Tensor,
    steps: int,
    recipe: FixtureRecipe,
    desc: str,
    teacher: Any | None = None,
) -> float:
    """Train on random windows of a token stream [N]; return the final loss (EMA).

    Without a teacher: next-token cross-entropy on the text. With one: distillation, the KL divergence
    from the teacher's next-token distribution to the model's at every position.
    """
    gen = torch.Generator().manual_seed(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps, pct_start=0.1)
    model.train()
    ema = float("nan")
    bar = tqdm.tqdm(range(steps), desc=desc, unit="step", mininterval=5.0)
    for _ in bar:
        starts = torch.randint(0, len(stream) - recipe.seq_len - 1, (recipe.batch,), generator=gen)
        x = torch.stack([stream[s : s + recipe.seq_len + 1] for s in starts.tolist()])  # [B, T+1]
        logits = model(input_ids=x[:, :-1]).logits  # [B, T, vocab]
        if teacher is None:
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1)
            )
        else:
            with torch.no_grad():
                want = teacher(input_ids=x[:, :-1]).logits.log_softmax(-1)  # [B, T, vocab]
            got = logits.log_softmax(-1)
            loss = torch.nn.functional.kl_div(
                got.reshape(-1, got.shape[-1]),
                want.reshape(-1, want.shape[-1]),
                log_target=True,
                reduction="batchmean",
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        value = float(loss.detach())
        ema = value if ema != ema else 0.9 * ema + 0.1 * value
        bar.set_postfix(loss=f"{ema:.3f}")
    model.train(False)
    return ema


def _stream(tok: PreTrainedTokenizerFast, files: list[SourceFile]) -> torch.Tensor:
    ids: list[int] = []
    for f in files:
        ids.extend(tok.encode(f.read(), add_special_tokens=False))
        ids.append(0)
    return torch.tensor(ids, dtype=torch.long)  # [N]


def build_fixtures(out: Path | None = None, recipe: FixtureRecipe | None = None, quiet: bool = False) -> Path:
    """Train (or reuse from cache) the fixture target and draft; return the directory holding both.

    When `out` is given the cached models are copied there as out/target and out/draft.
    """
    import tokenizers
    import transformers

    recipe = recipe or FixtureRecipe(
        versions={
            "torch": torch.__version__.split("+")[0],
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        }
    )
    roots = default_roots()
    missing = [lang for lang in recipe.target_langs if lang not in roots]
    if missing:
        raise RuntimeError(f"no source tree found on this machine for {missing}; found {sorted(roots)}")
    train_files = {
        lang: collect(lang, roots[lang], heldout=False, max_bytes=recipe.bytes_per_lang)
        for lang in recipe.target_langs
    }
    all_files = [f for lang in recipe.target_langs for f in train_files[lang]]
    digest = recipe.digest(all_files)
    home = cache_root() / "fixtures" / digest
    if not (home / "fixture.json").is_file():
        _train_all(home, recipe, train_files, quiet)
    if out is not None:
        for part in ("target", "draft"):
            if (out / part).exists():
                shutil.rmtree(out / part)
            shutil.copytree(home / part, out / part)
        shutil.copy2(home / "fixture.json", out / "fixture.json")
        return out
    return home


def _train_all(home: Path, recipe: FixtureRecipe, files: dict[str, list[SourceFile]], quiet: bool) -> None:
    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    texts = [f.read() for lang in recipe.target_langs for f in files[lang]]
    tok = train_tokenizer(texts, recipe.vocab_size)
    tmp = home.with_name(home.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    report: dict[str, Any] = {"recipe": asdict(recipe)}
    teacher = None
    for part, shape, langs, steps in (
        ("target", recipe.target, recipe.target_langs, recipe.target_steps),
        ("draft", recipe.draft, recipe.draft_langs, recipe.draft_steps),
    ):
        stream = _stream(tok, [f for lang in langs for f in files[lang]])
        torch.manual_seed(recipe.seed)
        model = _llama(shape, recipe)
        ts = time.perf_counter()
        loss = _train_lm(model, stream, steps, recipe, desc=f"fixture {part}", teacher=teacher)
        teacher = model  # the draft learns from the trained target
        model.save_pretrained(str(tmp / part), safe_serialization=True)
        tok.save_pretrained(str(tmp / part))
        report[part] = {
            "params": sum(p.numel() for p in model.parameters()),
            "train_tokens": int(len(stream)),
            "languages": list(langs),
            "objective": "next token" if part == "target" else "distilled from the target",
            "final_loss": round(loss, 4),
            "seconds": round(time.perf_counter() - ts, 1),
        }
        if not quiet:
            print(f"fixture {part}: {report[part]}", flush=True)
    report["train_files"] = {lang: [f.rel for f in fs] for lang, fs in files.items()}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (tmp / "fixture.json").write_text(json.dumps(report, indent=1))
    if home.exists():
        shutil.rmtree(home)
    tmp.rename(home)
