"""`adaspec train-draft`: a small Llama draft distilled from the target on one language's sources."""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from adaspec.runtime.artifacts import sha256_file
from adaspec.runtime.models import tokenizer_fingerprint
from adaspec.runtime.workloads import Corpus, CorpusSpec, WorkloadError, is_heldout, list_corpus

RECIPE_VERSION = 1
STATIC_REVISION = "static"  # the revision id of a static draft (the operator's and serve's `static`)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


@dataclass(frozen=True)
class DraftRecipe:
    """Everything that determines the draft (the cache key is a hash of it and of its inputs).

    The draft is the target's architecture cut to `layers` layers: embeddings, tied head and final
    norm are copied from the target and frozen, the layers start as copies of the target's first
    `layers` (self-speculative early-exit initialisation, LayerSkip arXiv 2404.16710) and are then
    distilled toward the target's next-token distribution (forward KL on all positions, the
    token-level KD of DistillSpec arXiv 2310.08461) on `lang` sources only.
    """

    lang: str = "python"
    layers: int = 2
    seq_len: int = 128
    batch_size: int = 4
    lr: float = 3e-3
    warmup_steps: int = 10
    budget_minutes: float = 15.0
    max_steps: int = 2000
    seed: int = 0
    eval_sequences: int = 8
    version: int = RECIPE_VERSION


@dataclass
class TrainReport:
    """What training did; saved in the draft's manifest.json and printed by the CLI."""

    recipe_hash: str
    parameters: int
    trainable_parameters: int
    size_bytes: int
    steps: int
    tokens: int
    seconds: float
    final_train_kl: float
    eval_kl_before: float
    eval_kl_after: float
    eval_top1_agreement_before: float  # share of positions where draft argmax == target argmax
    eval_top1_agreement_after: float
    training_files: list[str] = field(default_factory=list)


def recipe_hash(recipe: DraftRecipe, target_dir: Path, corpus: Corpus) -> str:
    """Return a sha256 over the recipe, the target's weights/config identity and the corpus file list."""
    target_id = {
        name: (target_dir / name).stat().st_size if (target_dir / name).exists() else None
        for name in ("config.json", "model.safetensors", "tokenizer.json")
    }
    marker = target_dir / "adaspec-conversion.json"
    if marker.is_file():
        target_id["conversion"] = json.loads(marker.read_text()).get("gguf_sha256")
    blob = json.dumps(
        {"recipe": asdict(recipe), "target": target_id, "corpus": [corpus.lang, list(corpus.files)]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def training_files(corpus: Corpus) -> list[str]:
    """Files training may read: the non-held-out split (benchmarks prompt only from the held-out one)."""
    return [f for f in corpus.files if not is_heldout(f)]


def token_stream(
    corpus: Corpus,
    files: Sequence[str],
    encode: Callable[[str], list[int]],
    eos: int,
    seed: int,
    used: list[str],
) -> Iterator[int]:
    """Yield tokens of the files in a seeded order, separated by EOS; append each file read to `used`."""
    order = list(files)
    random.Random(seed).shuffle(order)
    for file_id in order:
        try:
            text = corpus.read(file_id)
        except WorkloadError as exc:
            if isinstance(exc.__cause__, UnicodeDecodeError):
                continue
            raise
        used.append(file_id)
        yield from encode(text)
        yield eos


def batches(stream: Iterator[int], batch_size: int, seq_len: int) -> Iterator[torch.Tensor]:
    """Yield [batch, seq_len] windows cut consecutively from the stream (stops when it runs dry)."""
    need = batch_size * seq_len
    buf: list[int] = []
    for tok in stream:
        buf.append(tok)
        if len(buf) == need:
            yield torch.tensor(buf, dtype=torch.long).view(batch_size, seq_len)
            buf = []


def build_student(target: Any, layers: int) -> Any:
    """Return a `layers`-layer copy of the target's architecture, initialised from the target."""
    from transformers import AutoModelForCausalLM

    if not 1 <= layers <= target.config.num_hidden_layers:
        raise ValueError(f"layers must be in 1..{target.config.num_hidden_layers}, got {layers!r}")
    config = target.config.__class__.from_dict(target.config.to_dict())
    config.num_hidden_layers = layers
    if hasattr(config, "layer_types") and config.layer_types is not None:
        config.layer_types = list(config.layer_types)[:layers]
    student = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    target_state = target.state_dict()
    own = student.state_dict()
    loaded = {k: v.clone() for k, v in target_state.items() if k in own and own[k].shape == v.shape}
    student.load_state_dict(loaded, strict=False)
    student.tie_weights()
    for name, param in student.named_parameters():
        param.requires_grad = not ("embed_tokens" in name or "lm_head" in name)
    return student


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Forward KL(teacher || student) per position, averaged; both [batch, seq, vocab]."""
    vocab = student_logits.shape[-1]
    s = F.log_softmax(student_logits.float().view(-1, vocab), dim=-1)  # [n, vocab]
    t = F.log_softmax(teacher_logits.float().view(-1, vocab), dim=-1)  # [n, vocab]
    return F.kl_div(s, t, log_target=True, reduction="batchmean")


@torch.inference_mode()
def evaluate(student: Any, target: Any, data: Sequence[torch.Tensor]) -> tuple[float, float]:
    """Return (mean KL, top-1 agreement) of the student against the target on [batch, seq] windows."""
    kls, agree, total = [], 0, 0
    for ids in data:
        t_logits = target(ids).logits  # [batch, seq, vocab]
        s_logits = student(ids).logits  # [batch, seq, vocab]
        kls.append(float(kd_loss(s_logits, t_logits)))
        agree += int((t_logits.argmax(-1) == s_logits.argmax(-1)).sum())
        total += ids.numel()
    return sum(kls) / max(1, len(kls)), agree / max(1, total)


def train(
    target_dir: Path,
    corpus_spec: CorpusSpec,
    recipe: DraftRecipe,
    progress: Callable[[int, float, float], None] | None = None,
) -> tuple[Any, Any, TrainReport]:
    """Distil a draft; return (student, tokenizer, report). `progress(step, elapsed_s, loss)` per step."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = list_corpus(corpus_spec)
    files = training_files(corpus)
    if not files:
        raise WorkloadError(f"{corpus.lang} corpus {str(corpus.path)!r} has no files in the training split")
    digest = recipe_hash(recipe, target_dir, corpus)
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(target_dir))
    target: Any = AutoModelForCausalLM.from_pretrained(str(target_dir))
    target.eval()
    student = build_student(target, recipe.layers)
    eos = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    # Held-out windows from the same language, for the before/after figures (never trained on).
    heldout_used: list[str] = []
    heldout = [f for f in corpus.files if is_heldout(f)]
    eval_stream = token_stream(corpus, heldout, encode, eos, recipe.seed + 1, heldout_used)
    eval_batches = batches(eval_stream, 2, recipe.seq_len)
    eval_data = [b for _, b in zip(range(max(1, recipe.eval_sequences // 2)), eval_batches, strict=False)]
    if not eval_data:
        raise WorkloadError(
            f"{corpus.lang} corpus {str(corpus.path)!r}: its held-out files hold fewer than "
            f"{2 * recipe.seq_len} tokens, too few to evaluate the draft"
        )
    student.eval()
    kl_before, agree_before = evaluate(student, target, eval_data)

    used: list[str] = []
    params = [p for p in student.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    budget_s = recipe.budget_minutes * 60.0
    started = time.perf_counter()
    steps, tokens, ema = 0, 0, float("nan")
    student.train()
    stream = token_stream(corpus, files, encode, eos, recipe.seed, used)
    for ids in batches(stream, recipe.batch_size, recipe.seq_len):
        elapsed = time.perf_counter() - started
        if steps >= recipe.max_steps or elapsed >= budget_s:
            break
        # Linear warm-up, then cosine decay over the time budget (the budget, not steps, ends training).
        frac = min(1.0, elapsed / budget_s)
        scale = min(1.0, (steps + 1) / recipe.warmup_steps) * 0.5 * (1.0 + math.cos(math.pi * frac))
        for group in optim.param_groups:
            group["lr"] = recipe.lr * max(scale, 0.05)
        with torch.inference_mode():
            t_logits = target(ids).logits  # [batch, seq, vocab]
        loss = kd_loss(student(ids).logits, t_logits.clone())
        optim.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        steps += 1
        tokens += ids.numel()
        value = loss.detach().item()
        ema = value if math.isnan(ema) else 0.9 * ema + 0.1 * value
        if progress is not None:
            progress(steps, time.perf_counter() - started, ema)
    seconds = time.perf_counter() - started
    if steps == 0:
        raise WorkloadError(f"no training step fitted in the budget ({recipe.budget_minutes} min) or corpus")
    student.eval()
    kl_after, agree_after = evaluate(student, target, eval_data)
    total = sum(p.numel() for p in student.parameters())
    report = TrainReport(
        recipe_hash=digest,
        parameters=total,
        trainable_parameters=sum(p.numel() for p in params),
        size_bytes=0,
        steps=steps,
        tokens=tokens,
        seconds=round(seconds, 1),
        final_train_kl=round(ema, 4),
        eval_kl_before=round(kl_before, 4),
        eval_kl_after=round(kl_after, 4),
        eval_top1_agreement_before=round(agree_before, 4),
        eval_top1_agreement_after=round(agree_after, 4),
        training_files=sorted(set(used)),
    )
    return student, tokenizer, report


def save_draft(student: Any, target_dir: Path, out: Path, recipe: DraftRecipe, report: TrainReport) -> Path:
    """Write the draft as an HF directory (safetensors, the target's tokenizer files, manifest.json)."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        tensors = {
            k: v.detach().contiguous()
            for k, v in student.state_dict().items()
            if not (student.config.tie_word_embeddings and k == "lm_head.weight")
        }
        save_file(tensors, str(staging / "model.safetensors"), metadata={"format": "pt"})
        student.config.save_pretrained(str(staging))
        for name in TOKENIZER_FILES + ("generation_config.json",):
            if (target_dir / name).is_file():
                shutil.copy2(target_dir / name, staging / name)
        report.size_bytes = (staging / "model.safetensors").stat().st_size
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        # a revision (docs/CONTRACTS.md "Artifacts"): `serve --draft-artifact` and `adapt` load it as one
        manifest = {
            "revision": STATIC_REVISION,
            "parent": None,
            "target_model": target_dir.name,
            "tokenizer_sha256": tokenizer_fingerprint(target_dir),
            "files": {name: sha256_file(staging / name) for name in files},
            "training_window": {
                "kind": "static-draft",
                "target": str(target_dir),
                "corpus": recipe.lang,
                "recipe": asdict(recipe),
                "report": asdict(report),
            },
            "metrics": {
                "heldout_kl": report.eval_kl_after,
                "heldout_top1_agreement": report.eval_top1_agreement_after,
            },
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def cached_report(out: Path, digest: str) -> dict[str, Any] | None:
    """Return the manifest of a draft already built by the same recipe hash in `out`, else None."""
    manifest = out / "manifest.json"
    if not manifest.is_file() or not (out / "model.safetensors").is_file():
        return None
    data: dict[str, Any] = json.loads(manifest.read_text())
    return data if draft_report(data).get("recipe_hash") == digest else None


def draft_report(manifest: dict[str, Any]) -> dict[str, Any]:
    """What training did, from a static draft's manifest (its `training_window.report`); empty for a
    draft that train-draft did not make."""
    report: dict[str, Any] = dict(manifest.get("training_window") or {}).get("report") or {}
    return report


def ensure_draft(
    target_dir: Path,
    corpus_spec: CorpusSpec,
    out: Path | None,
    recipe: DraftRecipe,
    show_progress: bool = True,
) -> tuple[Path, dict[str, Any], bool]:
    """Return (draft dir, manifest, built_now): reuse `out` (default: the cache, by recipe hash) or train.

    The progress bar runs over the time budget and shows the step and the smoothed KL loss.
    """
    from tqdm import tqdm

    from adaspec.runtime.pretrained import cache_root

    if not (target_dir / "config.json").is_file():
        raise ValueError(f"target model directory {str(target_dir)!r} has no config.json")
    digest = recipe_hash(recipe, target_dir, list_corpus(corpus_spec))
    out = out or cache_root() / "drafts" / f"{corpus_spec.lang}-{digest[:12]}"
    cached = cached_report(out, digest)
    if cached is not None:
        return out, cached, False
    budget = int(recipe.budget_minutes * 60)
    with tqdm(total=budget, unit="s", desc="train-draft", disable=not show_progress) as bar:

        def progress(step: int, elapsed: float, loss: float) -> None:
            bar.n = min(budget, int(elapsed))
            bar.set_postfix(step=step, kl=f"{loss:.3f}", refresh=False)
            bar.refresh()

        student, _tokenizer, report = train(target_dir, corpus_spec, recipe, progress)
    save_draft(student, target_dir, out, recipe, report)
    cached = cached_report(out, digest)
    if cached is None:
        raise RuntimeError(f"draft in {str(out)!r}: manifest does not match recipe {digest[:12]}")
    return out, cached, True


def default_static_draft(
    target_dir: Path, python: CorpusSpec, budget_minutes: float = 15.0, seed: int = 0
) -> tuple[Path, dict[str, Any], bool]:
    """Return (dir, manifest, built_now) of the static draft `bench drift` and `demo` share: train-draft's
    recipe on `python`, cached under `<cache>/drafts/static-python` (trained when absent or stale)."""
    from adaspec.runtime.pretrained import cache_root

    recipe = DraftRecipe(lang="python", budget_minutes=budget_minutes, seed=seed)
    return ensure_draft(target_dir, python, cache_root() / "drafts" / "static-python", recipe)
