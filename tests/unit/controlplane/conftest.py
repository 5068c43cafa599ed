"""Fixtures of the control plane's unit tests: a store on a SQLite file, migrated to head."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from adaspec.controlplane.store.db import make_engine, migrate, sessions


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a fresh SQLite store (a file under the test's directory)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'cp.db'}")
    migrate(engine)
    yield sessions(engine)
    engine.dispose()
