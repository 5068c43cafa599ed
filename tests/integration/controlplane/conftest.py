"""Fixtures of the control plane's integration tests: a real PostgreSQL server and per-test databases."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from adaspec.controlplane.wiring import Store, open_store

from .pg import PostgresServer

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.init()
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cp.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_db(f"cp{next(_names)}")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """An open store on the test's database (SQLite or PostgreSQL, per db_url's parameter)."""
    st = open_store(db_url, attempts=3, delay_s=0.2)
    yield st
    st.close()
