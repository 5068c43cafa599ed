"""A shared `adaspec serve` (hybrid, on the fixtures with a chat template) for the serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .serving import Serving, start_serve, with_chat_template


@pytest.fixture(scope="session")
def chat_target(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture target with a chat template (same tokenizer.json, so drafts stay compatible)."""
    return with_chat_template(fixture_dir / "target", tmp_path_factory.mktemp("chat") / "target")


@pytest.fixture(scope="session")
def served(
    chat_target: Path, fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Serving]:
    """One hybrid `serve` for the session; stopped with SIGTERM, which must exit 0."""
    s = start_serve(
        tmp_path_factory.mktemp("serve"),
        f"--target-model={chat_target}",
        f"--static-draft=file://{fixture_dir / 'draft'}",
        "--served-model-name=fixture",
        "--max-queue=256",
    )
    yield s
    assert s.stop() == 0, s.log_text()[-2000:]
