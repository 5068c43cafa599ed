"""`adaspec serve --feature-draft DIR`: the offline-trained feature draft, loaded by the real server,
drafts through the real `openai` client and the output stays the target's own."""

from __future__ import annotations

from pathlib import Path

from adaspec.runtime.engine import autoregressive_generate
from adaspec.runtime.models import CachedLM, load_causal_lm
from adaspec.runtime.workloads import Prompt

from .serving import Serving, start_serve

MAX_NEW = 24


def _serve(fixture_dir: Path, feature_draft: Path, workdir: Path, strategy: str, *args: str) -> Serving:
    return start_serve(
        workdir,
        f"--target-model={fixture_dir / 'target'}",
        f"--static-draft=file://{fixture_dir / 'draft'}",
        f"--strategy={strategy}",
        f"--feature-draft=file://{feature_draft}",
        "--served-model-name=fixture",
        *args,
    )


def _complete_losslessly(
    fixture_dir: Path, served: Serving, prompts: list[Prompt]
) -> list[dict[str, dict[str, int]]]:
    """Send each prompt greedily; assert the tokens are the target's own; return the per-speculator stats."""
    reference = CachedLM(load_causal_lm(fixture_dir / "target", "target"))
    stats = []
    for p in prompts:
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
        stats.append(out.model_extra["speculation"]["per_speculator"])
    return stats


def test_serve_drafts_with_the_offline_feature_draft_and_stays_lossless(
    fixture_dir: Path, feature_draft: Path, prompts: list[Prompt], tmp_path: Path
) -> None:
    # minLookahead 2: the feature draft drafts every step, whatever the controller measures its cost to
    # be on a loaded machine (with the hybrid's cheaper parts beside it, it may rightly never draft)
    config = tmp_path / "controller.yaml"
    config.write_text("controller: {minLookahead: 2}\n")
    served = _serve(
        fixture_dir, feature_draft, tmp_path / "feature", "feature", f"--controller-config={config}"
    )
    try:
        stats = _complete_losslessly(fixture_dir, served, prompts[::6])  # 9 prompts, both languages
        accepted = sum(s.get("feature", {}).get("accepted_tokens", 0) for s in stats)
        drafted = sum(s.get("feature", {}).get("draft_tokens", 0) for s in stats)
        assert drafted >= len(stats) * MAX_NEW // 2, drafted
        assert accepted > 0, "the feature draft never drafted an accepted token"
    finally:
        assert served.stop() == 0, served.log_text()[-2000:]


def test_serve_hybrid_feature_stays_lossless(
    fixture_dir: Path, feature_draft: Path, prompts: list[Prompt], tmp_path: Path
) -> None:
    served = _serve(fixture_dir, feature_draft, tmp_path / "hybrid", "hybrid-feature")
    try:
        _complete_losslessly(fixture_dir, served, prompts[3::12])
    finally:
        assert served.stop() == 0, served.log_text()[-2000:]
