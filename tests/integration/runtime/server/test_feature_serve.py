"""`adaspec serve --strategy hybrid-feature --feature-draft DIR`: the offline-trained feature draft, loaded
by the real server, drafts through the real `openai` client and the output stays the target's own."""

from __future__ import annotations

from pathlib import Path

from adaspec.runtime.engine import autoregressive_generate
from adaspec.runtime.models import CachedLM, load_causal_lm
from adaspec.runtime.workloads import Prompt

from .serving import start_serve

MAX_NEW = 24


def test_serve_drafts_with_the_offline_feature_draft_and_stays_lossless(
    fixture_dir: Path, feature_draft: Path, prompts: list[Prompt], tmp_path: Path
) -> None:
    served = start_serve(
        tmp_path,
        f"--target-model={fixture_dir / 'target'}",
        f"--static-draft=file://{fixture_dir / 'draft'}",
        "--strategy=hybrid-feature",
        f"--feature-draft=file://{feature_draft}",
        "--served-model-name=fixture",
    )
    try:
        reference = CachedLM(load_causal_lm(fixture_dir / "target", "target"))
        accepted = drafted = 0
        for p in prompts[::6]:  # 9 prompts, both languages
            ids = list(p.token_ids)
            out = served.openai().completions.create(
                model="fixture",
                prompt=ids,
                max_tokens=MAX_NEW,
                temperature=0,
                extra_body={"return_token_ids": True, "speculation_stats": True},
            )
            assert list(out.choices[0].model_extra["token_ids"]) == autoregressive_generate(
                reference, ids, MAX_NEW, eos_token_id=0
            )
            feature = out.model_extra["speculation"]["per_speculator"].get("feature", {})
            accepted += feature.get("accepted_tokens", 0)
            drafted += feature.get("draft_tokens", 0)
        assert drafted > 0 and accepted > 0, "the feature draft never drafted an accepted token"
    finally:
        assert served.stop() == 0, served.log_text()[-2000:]
