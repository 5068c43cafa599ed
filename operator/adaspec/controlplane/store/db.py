"""Engine with connect retries, Alembic migrations, sessions and the leader lease."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from .models import Lease

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger("adaspec.controlplane.store")


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached (after retries)."""


def redact(url: str) -> str:
    """Return the URL with its password hidden (for logs and errors)."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str) -> Engine:
    """Return an engine for `url` (SQLite gets WAL, foreign keys and a busy timeout)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
            cur.close()

        return engine
    return create_engine(
        url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args={"connect_timeout": 5}
    )


def wait_for(
    engine: Engine, attempts: int = 10, delay_s: float = 1.0, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Return once `SELECT 1` succeeds; retry with backoff; raise DatabaseUnavailable naming the URL."""
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return
        except OperationalError as exc:
            last = exc
            log.warning(
                "event=db_unreachable url=%s attempt=%d/%d", redact(str(engine.url)), attempt, attempts
            )
            if attempt < attempts:
                sleep(min(delay_s * 2 ** (attempt - 1), 30.0))
    reason = str(last.orig if isinstance(last, OperationalError) else last).strip().splitlines()[0]
    raise DatabaseUnavailable(
        f"database {redact(str(engine.url))} unreachable after {attempts} attempts: {reason}"
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to `revision` with the package's Alembic migrations."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def sessions(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory (objects stay readable after commit)."""
    return sessionmaker(engine, expire_on_commit=False)


def acquire_lease(
    factory: sessionmaker[Session], name: str, holder: str, ttl_s: float, now: datetime
) -> bool:
    """Take or renew lease `name` for `holder` until now + ttl; return whether `holder` holds it.

    Atomic on every backend: a conditional UPDATE (held by us, or expired), else an INSERT that loses
    to a concurrent one on the primary key.
    """
    until = now + timedelta(seconds=ttl_s)
    with factory() as s, s.begin():
        res = s.execute(
            update(Lease)
            .where(Lease.name == name, (Lease.holder == holder) | (Lease.expires_at < now))
            .values(holder=holder, expires_at=until)
        )
        if res.rowcount:  # type: ignore[attr-defined]
            return True
        if s.execute(select(Lease.name).where(Lease.name == name)).first() is not None:
            return False
    try:
        with factory() as s, s.begin():
            s.add(Lease(name=name, holder=holder, expires_at=until))
        return True
    except IntegrityError:
        return False


def release_lease(factory: sessionmaker[Session], name: str, holder: str) -> None:
    """Give lease `name` up if `holder` holds it (a clean shutdown hands over at once)."""
    with factory() as s, s.begin():
        s.execute(
            update(Lease)
            .where(Lease.name == name, Lease.holder == holder)
            .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
        )
