"""Real fixture models (trained here, cached by recipe) and prompts cut from held-out source files, for the
runtime's and `adaspec up`'s integration tests (imported lazily: the control-plane tests need no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    from adaspec.runtime.fixtures import build_fixtures

    return build_fixtures()


@pytest.fixture(scope="session")
def prompts(fixture_dir: Path) -> list[Any]:
    """52 prompts (`adaspec.runtime.workloads.Prompt`): 26 Python (the draft's language) and 26 Go (unseen
    by the draft), 48 tokens each."""
    from adaspec.runtime.microbench import cut_prompts
    from adaspec.runtime.models import load_tokenizer

    tok = load_tokenizer(fixture_dir / "target")
    out = [p for lang in ("python", "go") for p in cut_prompts(tok, lang, 26, length=48)]
    assert len(out) == 52
    return out
