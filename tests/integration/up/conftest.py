"""Fixtures of the `adaspec up` tests: the fixture models and prompts (the same definitions as the runtime
tests', built from adaspec), and `adaspec up` as a real process."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.fixtures import build_fixtures
from adaspec.runtime.microbench import cut_prompts
from adaspec.runtime.models import load_tokenizer
from adaspec.runtime.workloads import Prompt


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return build_fixtures()


@pytest.fixture(scope="session")
def prompts(fixture_dir: Path) -> list[Prompt]:
    """52 prompts: 26 Python (the draft's language) and 26 Go (unseen by the draft), 48 tokens each."""
    tok = load_tokenizer(fixture_dir / "target")
    out = [p for lang in ("python", "go") for p in cut_prompts(tok, lang, 26, length=48)]
    assert len(out) == 52
    return out
