"""`adaspec train-draft`: a small Llama draft distilled from the target on one language's sources."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F

from adaspec.runtime.artifacts import sha256_file
from adaspec.runtime.draft_data import batches, epochs, token_stream, training_files
from adaspec.runtime.models import tokenizer_fingerprint
from adaspec.runtime.proposers.vocab import reduced_size, save_counts
from adaspec.runtime.workloads import Corpus, CorpusSpec, WorkloadError, is_heldout, list_corpus

log = logging.getLogger("adaspec.train_draft")

# 2: the step count, not a time budget, ends training and drives the LR schedule; 3: the draft carries the
# counts of the tokens it was trained on (vocab.safetensors), which rank its reduced output vocabulary
RECIPE_VERSION = 3
CAP_FIELDS = ("budget_minutes",)  # recipe fields that only cap the run: outside the recipe hash
StopReason = Literal["steps", "time_cap"]  # the recipe completed, or the wall-clock cap cut it short
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

    `steps` optimisation steps end training and drive the learning rate (`lr_scale`), so the same recipe
    gives the same draft on a loaded machine as on an idle one; 450 steps took about 15 minutes on this
    project's 2-core CPU (456 steps in 901 s, `bench/results/drift-full`). `budget_minutes` only caps the
    training loop's wall-clock time: when it is hit first, training stops short and the report says
    `stopped_by="time_cap"`. The cap is not part of the recipe hash.
    """

    lang: str = "python"
    layers: int = 2
    seq_len: int = 128
    batch_size: int = 4
    lr: float = 3e-3
    warmup_steps: int = 10
    steps: int = 450
    budget_minutes: float = 60.0
    seed: int = 0
    eval_sequences: int = 8
    version: int = RECIPE_VERSION

    def __post_init__(self) -> None:
        check_recipe(self, ("layers", "seq_len", "batch_size", "steps", "eval_sequences"))


def check_recipe(recipe: Any, counts: Sequence[str]) -> None:
    """ValueError naming the first field out of range: `counts` >= 1, lr and the cap > 0, warm-up >= 0."""
    for name in counts:
        if getattr(recipe, name) < 1:
            raise ValueError(f"recipe {name} must be >= 1, got {getattr(recipe, name)!r}")
    for name in ("lr", "budget_minutes"):
        if not getattr(recipe, name) > 0:
            raise ValueError(f"recipe {name} must be > 0, got {getattr(recipe, name)!r}")
    if recipe.warmup_steps < 0:
        raise ValueError(f"recipe warmup_steps must be >= 0, got {recipe.warmup_steps!r}")


@dataclass
class TrainReport:
    """What training did; saved in the draft's manifest.json and printed by the CLI."""

    recipe_hash: str
    parameters: int
    trainable_parameters: int
    size_bytes: int
    steps: int
    planned_steps: int  # the recipe's `steps`; fewer were run when stopped_by is "time_cap"
    tokens: int
    seconds: float
    stopped_by: StopReason
    final_train_kl: float
    eval_kl_before: float
    eval_kl_after: float
    eval_top1_agreement_before: float  # share of positions where draft argmax == target argmax
    eval_top1_agreement_after: float
    training_files: list[str] = field(default_factory=list)
    # the reduced draft vocabulary the counts rank (`proposers.vocab.reduced_size` ids) and its share of them
    vocab_size: int = 0
    vocab_coverage: float | None = None


def recipe_hash(recipe: Recipe, target_dir: Path, corpus: Corpus) -> str:
    """Return a sha256 over the recipe (less its cap, `CAP_FIELDS`), the target's weights/config identity
    and the corpus file list."""
    target_id = {
        name: (target_dir / name).stat().st_size if (target_dir / name).exists() else None
        for name in ("config.json", "model.safetensors", "tokenizer.json")
    }
    marker = target_dir / "adaspec-conversion.json"
    if marker.is_file():
        target_id["conversion"] = json.loads(marker.read_text()).get("gguf_sha256")
    blob = json.dumps(
        {"recipe": recipe_identity(recipe), "target": target_id, "corpus": [corpus.lang, list(corpus.files)]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def recipe_identity(recipe: Recipe) -> dict[str, Any]:
    """Return the recipe's fields that determine the draft (all but the wall-clock cap)."""
    return {k: v for k, v in asdict(recipe).items() if k not in CAP_FIELDS}


def lr_scale(step: int, steps: int, warmup_steps: int, floor: float = 0.05) -> float:
    """Return the learning-rate multiplier of 0-based `step` out of `steps`: linear warm-up over
    `warmup_steps`, then cosine decay over the remaining steps, never below `floor` (steps, never time)."""
    if step < warmup_steps:
        return max(floor, (step + 1) / warmup_steps)
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return max(floor, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


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


class Recipe(Protocol):
    """What the training loop reads from a recipe (DraftRecipe here, FeatureRecipe for the feature draft)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def lang(self) -> str: ...

    @property
    def seq_len(self) -> int: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def lr(self) -> float: ...

    @property
    def warmup_steps(self) -> int: ...

    @property
    def steps(self) -> int: ...

    @property
    def budget_minutes(self) -> float: ...

    @property
    def seed(self) -> int: ...

    @property
    def eval_sequences(self) -> int: ...


@dataclass
class Prepared:
    """A recipe's inputs, loaded: the corpus and its training split, the target, held-out windows."""

    corpus: Corpus
    files: list[str]
    digest: str
    tokenizer: Any
    target: Any
    eos: int
    eval_data: list[torch.Tensor]  # [2, seq_len] held-out windows, never trained on

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def batches(self, recipe: Recipe, used: list[str]) -> Iterator[torch.Tensor]:
        """[batch, seq_len] windows of the training split, epoch after epoch (files read: `used`)."""
        stream = epochs(self.corpus, self.files, self.encode, self.eos, recipe.seed, used)
        return batches(stream, recipe.batch_size, recipe.seq_len)


def prepare(target_dir: Path, corpus_spec: CorpusSpec, recipe: Recipe) -> Prepared:
    """Load the target and tokenizer, list the corpus, cut the held-out windows; WorkloadError when the
    corpus has no training split or too little held out."""
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
    eos = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
    prep = Prepared(corpus, files, digest, tokenizer, target, eos, [])
    heldout = [f for f in corpus.files if is_heldout(f)]
    eval_stream = token_stream(corpus, heldout, prep.encode, eos, recipe.seed + 1, [])
    eval_batches = batches(eval_stream, 2, recipe.seq_len)
    count = max(1, recipe.eval_sequences // 2)
    prep.eval_data = [b for _, b in zip(range(count), eval_batches, strict=False)]
    if not prep.eval_data:
        raise WorkloadError(
            f"{corpus.lang} corpus {str(corpus.path)!r}: its held-out files hold fewer than "
            f"{2 * recipe.seq_len} tokens, too few to evaluate the draft"
        )
    return prep


@dataclass(frozen=True)
class Loop:
    """What the step loop did."""

    steps: int
    tokens: int
    seconds: float
    stopped_by: StopReason
    final_loss: float  # smoothed (EMA 0.9)

    def report(self, recipe: Recipe) -> dict[str, Any]:
        """The fields every training report carries about the loop."""
        return {
            "steps": self.steps,
            "planned_steps": recipe.steps,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 1),
            "stopped_by": self.stopped_by,
        }


def run_steps(
    recipe: Recipe,
    data: Iterator[torch.Tensor],
    step: Callable[[torch.Tensor, float], float],
    corpus: Corpus,
    progress: Callable[[int, float, float], None] | None,
    clock: Callable[[], float],
) -> Loop:
    """Call `step(ids, lr)` on each [batch, seq] window until `recipe.steps` steps (or the time cap, read on
    `clock`, logged); `lr` follows `lr_scale`. `progress(step, elapsed_s, smoothed loss)` after each."""
    budget_s = recipe.budget_minutes * 60.0
    steps, tokens, ema = 0, 0, float("nan")
    stopped_by: StopReason = "steps"
    started = clock()
    while steps < recipe.steps:
        if clock() - started >= budget_s:
            stopped_by = "time_cap"
            break
        ids = next(data, None)  # [batch, seq]
        if ids is None:
            raise WorkloadError(f"{corpus.lang} corpus {str(corpus.path)!r}: no tokens in its training files")
        value = step(ids, recipe.lr * lr_scale(steps, recipe.steps, recipe.warmup_steps))
        steps += 1
        tokens += ids.numel()
        ema = value if math.isnan(ema) else 0.9 * ema + 0.1 * value
        if progress is not None:
            progress(steps, clock() - started, ema)
    seconds = clock() - started
    if steps == 0:
        raise WorkloadError(f"no training step fitted in the time cap ({recipe.budget_minutes} min)")
    if stopped_by == "time_cap":
        log.warning(  # the recipe was not completed: a larger --budget-minutes would finish it
            f"event=train_draft_time_cap steps={steps} planned_steps={recipe.steps} "
            f"budget_minutes={recipe.budget_minutes:g}"
        )
    return Loop(steps, tokens, seconds, stopped_by, ema)


def train(
    target_dir: Path,
    corpus_spec: CorpusSpec,
    recipe: DraftRecipe,
    progress: Callable[[int, float, float], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Any, Any, TrainReport, torch.Tensor]:
    """Distil a draft for `recipe.steps` steps (fewer when the loop's time cap `recipe.budget_minutes`, read
    on `clock`, is hit first: logged and reported as `stopped_by`); return (student, tokenizer, report,
    counts of the trained-on tokens [vocab], which rank a reduced draft vocabulary: `proposers.vocab`).
    `progress(step, elapsed_s, loss)` after each step."""
    prep = prepare(target_dir, corpus_spec, recipe)
    target = prep.target
    student = build_student(target, recipe.layers)
    student.eval()
    kl_before, agree_before = evaluate(student, target, prep.eval_data)

    used: list[str] = []
    params = [p for p in student.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    vocab = int(student.get_output_embeddings().weight.shape[0])
    counts = torch.zeros(vocab, dtype=torch.float64)  # [vocab]

    def step(ids: torch.Tensor, lr: float) -> float:
        for group in optim.param_groups:
            group["lr"] = lr
        counts.add_(torch.bincount(ids.flatten().clamp(0, vocab - 1), minlength=vocab).double())
        with torch.inference_mode():
            t_logits = target(ids).logits  # [batch, seq, vocab]
        loss = kd_loss(student(ids).logits, t_logits.clone())
        optim.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        return float(loss.detach().item())

    student.train()
    loop = run_steps(recipe, prep.batches(recipe, used), step, prep.corpus, progress, clock)
    student.eval()
    kl_after, agree_after = evaluate(student, target, prep.eval_data)
    total = sum(p.numel() for p in student.parameters())
    report = TrainReport(
        recipe_hash=prep.digest,
        parameters=total,
        trainable_parameters=sum(p.numel() for p in params),
        size_bytes=0,
        **loop.report(recipe),
        final_train_kl=round(loop.final_loss, 4),
        eval_kl_before=round(kl_before, 4),
        eval_kl_after=round(kl_after, 4),
        eval_top1_agreement_before=round(agree_before, 4),
        eval_top1_agreement_after=round(agree_after, 4),
        training_files=sorted(set(used)),
        vocab_size=reduced_size(vocab),
        vocab_coverage=round(
            float(counts.topk(reduced_size(vocab)).values.sum() / counts.sum().clamp(min=1)), 4
        ),
    )
    return student, prep.tokenizer, report, counts


def save_draft(
    student: Any,
    target_dir: Path,
    out: Path,
    recipe: DraftRecipe,
    report: TrainReport,
    counts: torch.Tensor | None = None,
) -> Path:
    """Write the draft as an HF directory (safetensors, the target's tokenizer files, manifest.json), with
    its training tokens' `counts` as vocab.safetensors when given."""
    from safetensors.torch import save_file

    def fill(staging: Path) -> None:
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
        if counts is not None:
            save_counts(staging, counts)

    metrics = {
        "heldout_kl": report.eval_kl_after,
        "heldout_top1_agreement": report.eval_top1_agreement_after,
    }
    return write_draft_dir(out, target_dir, fill, "static-draft", recipe, report, metrics)


def write_draft_dir(
    out: Path,
    target_dir: Path,
    fill: Callable[[Path], None],
    kind: str,
    recipe: Any,
    report: Any,
    metrics: dict[str, float],
) -> Path:
    """Write a trained draft as a revision (docs/CONTRACTS.md "Artifacts"), atomically: `fill(staging)`
    writes its files into a temporary directory, the manifest lists their sha256, and the directory is
    renamed to `out` (replacing it). `serve` and `adapt` load it as revision `static`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        fill(staging)
        files = sorted(p.name for p in staging.iterdir() if p.is_file())
        manifest = {
            "revision": STATIC_REVISION,
            "parent": None,
            "target_model": target_dir.name,
            "tokenizer_sha256": tokenizer_fingerprint(target_dir),
            "files": {name: sha256_file(staging / name) for name in files},
            "training_window": {
                "kind": kind,
                "target": str(target_dir),
                "corpus": recipe.lang,
                "recipe": asdict(recipe),
                "report": asdict(report),
            },
            "metrics": metrics,
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


def cached_report(out: Path, digest: str, budget_minutes: float | None = None) -> dict[str, Any] | None:
    """Return the manifest of a draft already built by the same recipe hash in `out`, else None. A draft the
    time cap stopped short is not reused under a larger cap `budget_minutes` (it may now complete)."""
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return None
    data: dict[str, Any] = json.loads(manifest.read_text())
    if not data.get("files") or not all((out / name).is_file() for name in data["files"]):
        return None
    report = draft_report(data)
    if report.get("recipe_hash") != digest:
        return None
    if budget_minutes is not None and report.get("stopped_by") == "time_cap":
        capped = dict(data.get("training_window") or {}).get("recipe", {}).get("budget_minutes", 0.0)
        if budget_minutes > capped:
            return None
    return data


def draft_report(manifest: dict[str, Any]) -> dict[str, Any]:
    """What training did, from a static draft's manifest (its `training_window.report`); empty for a
    draft that train-draft did not make."""
    report: dict[str, Any] = dict(manifest.get("training_window") or {}).get("report") or {}
    return report


Progress = Callable[[int, float, float], None]  # (step, elapsed_s, smoothed loss)


def train_and_save(
    target_dir: Path, corpus_spec: CorpusSpec, recipe: Any, out: Path, progress: Progress
) -> None:
    """Train a static draft by `recipe` (a DraftRecipe) and write it to `out`."""
    student, _tokenizer, report, counts = train(target_dir, corpus_spec, recipe, progress)
    save_draft(student, target_dir, out, recipe, report, counts)


def ensure_draft(
    target_dir: Path,
    corpus_spec: CorpusSpec,
    out: Path | None,
    recipe: Recipe,
    show_progress: bool = True,
    build: Callable[[Path, CorpusSpec, Any, Path, Progress], None] = train_and_save,
) -> tuple[Path, dict[str, Any], bool]:
    """Return (draft dir, manifest, built_now): reuse `out` (default: the cache, by recipe hash) or `build`
    it (`train_and_save`: a static draft; `train_feature.train_and_save`: a feature draft).

    The progress bar runs over the recipe's steps and shows the smoothed loss. A draft the time cap
    stopped short is reused (with a warning) unless the cap is now larger.
    """
    from tqdm import tqdm

    from adaspec.runtime.pretrained import cache_root

    if not (target_dir / "config.json").is_file():
        raise ValueError(f"target model directory {str(target_dir)!r} has no config.json")
    digest = recipe_hash(recipe, target_dir, list_corpus(corpus_spec))
    out = out or cache_root() / "drafts" / f"{corpus_spec.lang}-{digest[:12]}"
    cached = cached_report(out, digest, recipe.budget_minutes)
    if cached is not None:
        if draft_report(cached).get("stopped_by") == "time_cap":
            log.warning("event=train_draft_reused_incomplete out=%s msg='stopped by its time cap'", out)
        return out, cached, False
    with tqdm(total=recipe.steps, unit="step", desc="train-draft", disable=not show_progress) as bar:

        def progress(step: int, elapsed: float, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.refresh()

        build(target_dir, corpus_spec, recipe, out, progress)
    cached = cached_report(out, digest)
    if cached is None:
        raise RuntimeError(f"draft in {str(out)!r}: manifest does not match recipe {digest[:12]}")
    return out, cached, True


def default_static_draft(
    target_dir: Path, python: CorpusSpec, budget_minutes: float = DraftRecipe.budget_minutes, seed: int = 0
) -> tuple[Path, dict[str, Any], bool]:
    """Return (dir, manifest, built_now) of the static draft `bench drift` and `demo` share: train-draft's
    recipe on `python` (`budget_minutes` its time cap), cached under `<cache>/drafts/static-python` (trained
    when absent or stale)."""
    from adaspec.runtime.pretrained import cache_root

    recipe = DraftRecipe(lang="python", budget_minutes=budget_minutes, seed=seed)
    return ensure_draft(target_dir, python, cache_root() / "drafts" / "static-python", recipe)
