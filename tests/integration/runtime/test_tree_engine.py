"""Token-tree verification in the engine: when two drafts part, both are verified in one target pass, and
the output stays exactly the target's (greedy, and seeded sampling whose target draws are fixed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.controller import ControllerConfig
from adaspec.runtime.engine import SpeculativeEngine, build_engine
from adaspec.runtime.sampling import SamplingParams
from adaspec.runtime.workloads import Prompt

from .test_lossless_greedy import MAX_NEW, hf_reference  # noqa: F401 - the module fixture

TREES = ControllerConfig(max_tree_nodes=24)


def _trees_engine(fixture_dir: Path, strategy: str, monkeypatch: pytest.MonkeyPatch) -> SpeculativeEngine:
    """An engine whose controller counts every proposer as cheap (each drafts at every step) and prices a
    tree at half a chain of its size, so that whenever two drafts part it verifies both. What is under
    test is the tree path's output, not whether this machine measures trees as paying: with measured
    costs the fixture draft is not cheap (c about 0.45), and CI once saw one tree step in 52 prompts."""
    engine = build_engine(fixture_dir / "target", fixture_dir / "draft", strategy, controller=TREES)
    assert engine.controller is not None
    costs = engine.controller.costs
    monkeypatch.setattr(engine.controller, "is_cheap", lambda _name: True)
    monkeypatch.setattr(costs, "t_tree", lambda q: 0.5 * costs.t_verify(q))
    return engine


def _tree_steps(
    engine: SpeculativeEngine, prompt: Prompt, sampling: SamplingParams | None = None
) -> tuple[list[int], int]:
    res = engine.generate(prompt.token_ids, MAX_NEW, sampling=sampling, tag=prompt.lang)
    return res.token_ids, sum(1 for s in res.steps if s.branches > 1)


@pytest.mark.parametrize("strategy", ["hybrid", "hybrid-feature"])
def test_tree_steps_keep_greedy_output_identical(
    strategy: str,
    fixture_dir: Path,
    prompts: list[Prompt],
    hf_reference: list[list[int]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = _trees_engine(fixture_dir, strategy, monkeypatch)
    trees = 0
    for p, ref in zip(prompts, hf_reference, strict=True):
        out, n = _tree_steps(engine, p)
        assert out == ref, f"{strategy} with trees diverged from the target on a {p.lang} prompt"
        trees += n
    assert engine.controller is not None
    print(
        f"{strategy}: {trees} tree steps over {len(prompts)} prompts; measured tree cost "
        f"{engine.controller.costs.tree_overhead:.2f}x a chain's (priced at 0.5x here)"
    )
    assert trees >= len(prompts), "hardly a step verified a tree: the test would prove little"
    assert engine.controller.costs.tree_overhead != 1.0  # tree passes were measured


def test_tree_steps_keep_seeded_sampling_identical_to_the_target_alone(
    fixture_dir: Path, prompts: list[Prompt], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seeded sampling fixes the target's draw at every position (Gumbel-max keyed by seed and position):
    the speculative output must be exactly the target alone's, tree steps included."""
    engine = _trees_engine(fixture_dir, "hybrid", monkeypatch)
    alone = build_engine(fixture_dir / "target", None, "target-only")
    trees = 0
    for i, p in enumerate(prompts[::2]):
        sampling = SamplingParams(temperature=0.8, top_p=0.95, seed=i, reproducible=True)
        out, n = _tree_steps(engine, p, sampling)
        assert out == alone.generate(p.token_ids, MAX_NEW, sampling=sampling).token_ids
        trees += n
    assert trees > 0
