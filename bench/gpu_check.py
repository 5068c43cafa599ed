"""One-shot GPU check of the runtime (run on a CUDA machine; prints JSON lines, writes $OUT/gpu_check.json).

1. Lossless on CUDA: every strategy's greedy tokens equal transformers' generate on the fixture models.
2. The micro benchmark on CUDA: strategies side by side (tiny models: launch-bound, so c ~ 1).
3. Verify cost against q for a Llama of 1B shape in bf16 under HF eager: t_verify(q) / t_verify(1), the
   figure that decides whether speculation pays (ANCHORS.md: ~1.3-1.4x for q <= 32 with CUDA graphs).

Not yet run on a GPU: no device machine was lent to the session that wrote it.

Usage, on the CPU machine first (cuts prompts where the Go sources are), then on the GPU machine:
    python bench/gpu_check.py --prepare DIR    # copies the fixture models to DIR with prompts.json
    python bench/gpu_check.py DIR
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch


def log(obj: dict[str, object], sink: list[dict[str, object]]) -> None:
    print(json.dumps(obj), flush=True)
    sink.append(obj)


def lossless(fixtures: Path, sink: list[dict[str, object]]) -> None:
    """Greedy identity with HF generate on CUDA, and each strategy's figures next to target-only."""
    from adaspec.runtime.engine import build_engine
    from adaspec.runtime.microbench import Prompt
    from adaspec.runtime.models import load_causal_lm
    from adaspec.runtime.stats import GenerationStats

    # prompts cut on the CPU machine (this one may lack the Go sources): [{"lang", "ids"}]
    prompts = [Prompt(p["lang"], p["ids"]) for p in json.loads((fixtures / "prompts.json").read_text())]
    ref_model = load_causal_lm(fixtures / "target", "target", "cuda")
    refs = []
    for p in prompts:
        ids = torch.tensor([p.ids], device="cuda")
        with torch.inference_mode():
            g = ref_model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=32,
                eos_token_id=0,
                pad_token_id=0,
            )
        refs.append(g[0, len(p.ids) :].tolist())
    for strategy in ("target-only", "static", "suffix", "adaptive", "hybrid"):
        eng = build_engine(fixtures / "target", fixtures / "draft", strategy, device="cuda")
        total = GenerationStats()
        same = 0
        for p, r in zip(prompts, refs, strict=True):
            res = eng.generate(p.ids, 32, tag=p.lang)
            same += res.token_ids == r
            total.merge(res.stats)
        log(
            {
                "check": "lossless_cuda",
                "strategy": strategy,
                "identical": same,
                "prompts": len(prompts),
                "mean_accepted_length": round(total.mean_accepted_length, 3),
                "tokens_per_second": round(total.tokens_per_second, 1),
            },
            sink,
        )


def verify_cost(sink: list[dict[str, object]]) -> None:
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=49152,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=4096,
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).eval()  # random weights: only the timing matters here
    torch.set_default_dtype(torch.float32)
    ctx = torch.randint(0, 49152, (1, 1024), device="cuda")
    with torch.inference_mode():
        cache = DynamicCache()
        model(input_ids=ctx, past_key_values=cache, use_cache=True)
        base = None
        for q in (1, 2, 4, 8, 16, 32):
            x = torch.randint(0, 49152, (1, q), device="cuda")
            times = []
            for _ in range(12):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(input_ids=x, past_key_values=cache, use_cache=True)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                cache.crop(-q)
            t = sorted(times[2:])[len(times[2:]) // 2]
            base = base or t
            log(
                {
                    "check": "verify_cost_1b_bf16_hf_eager",
                    "q": q,
                    "ms": round(t * 1e3, 3),
                    "ratio_vs_q1": round(t / base, 3),
                },
                sink,
            )


def prepare(out: Path) -> None:
    """Copy the fixture models and 20 held-out prompts (Python and Go) into `out`."""
    import shutil

    from adaspec.runtime.fixtures import build_fixtures
    from adaspec.runtime.microbench import cut_prompts
    from adaspec.runtime.models import load_tokenizer

    home = build_fixtures()
    for part in ("target", "draft"):
        shutil.rmtree(out / part, ignore_errors=True)
        shutil.copytree(home / part, out / part)
    tok = load_tokenizer(home / "target")
    prompts = [p for lang in ("python", "go") for p in cut_prompts(tok, lang, 10, length=48)]
    (out / "prompts.json").write_text(json.dumps([{"lang": p.lang, "ids": p.ids} for p in prompts]))


def main() -> int:
    if sys.argv[1] == "--prepare":
        prepare(Path(sys.argv[2]))
        return 0
    fixtures = Path(sys.argv[1])
    sink: list[dict[str, object]] = []
    log({"device": torch.cuda.get_device_name(0), "torch": torch.__version__}, sink)
    lossless(fixtures, sink)
    verify_cost(sink)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.json").write_text(json.dumps(sink, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
