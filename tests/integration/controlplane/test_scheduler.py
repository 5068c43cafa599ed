"""One scheduling replica at a time: the lease, APScheduler's job store in the database, take-over."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from adaspec.controlplane.scheduler import JOBS_TABLE, LEASE, Runner
from adaspec.controlplane.store.db import acquire_lease, release_lease
from adaspec.controlplane.store.models import AdaptationRun
from adaspec.controlplane.wiring import Store, build, open_store

from .fleet import Fleet
from .scenario import T0, settings


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    st = open_store(db_url, attempts=3, delay_s=0.2)
    yield st
    st.close()


def test_lease_is_exclusive_until_it_expires(store: Store) -> None:
    f = store.factory
    assert acquire_lease(f, LEASE, "a", 30, T0)
    assert not acquire_lease(f, LEASE, "b", 30, T0 + timedelta(seconds=10))
    assert acquire_lease(f, LEASE, "a", 30, T0 + timedelta(seconds=20))  # renewal
    assert not acquire_lease(f, LEASE, "b", 30, T0 + timedelta(seconds=45))
    assert acquire_lease(f, LEASE, "b", 30, T0 + timedelta(seconds=51))  # a stopped renewing
    assert not acquire_lease(f, LEASE, "a", 30, T0 + timedelta(seconds=52))
    release_lease(f, LEASE, "b")
    assert acquire_lease(f, LEASE, "a", 30, T0 + timedelta(seconds=53))


def wait_until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_second_replica_takes_over_when_the_first_dies(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(lambda revision, role, minute: 0.7)
    try:
        st = settings(fleet, tmp_path, "unused")
        st.scrape_interval_s, st.evaluate_interval_s, st.lease_ttl_s = 0.2, 0.3, 1.0
        st.speculators[0].schedule = "0 3 * * *"
        a = Runner(build(st, store), store.engine, "replica-a")
        b = Runner(build(st, store), store.engine, "replica-b")
        ta = threading.Thread(target=a.run, daemon=True)
        ta.start()
        wait_until(lambda: a.leading)
        tb = threading.Thread(target=b.run, daemon=True)
        tb.start()
        wait_until(lambda: a.cp.telemetry.scrapes._value.get() >= 4)
        assert not b.leading and b.cp.telemetry.scrapes._value.get() == 0
        with store.factory() as s:
            ids = set(s.execute(text(f"SELECT id FROM {JOBS_TABLE}")).scalars())
        assert ids == {"scrape", "evaluate", "adapt-cron:chat"}
        a.crash()  # dies without releasing the lease
        ta.join(5)
        wait_until(lambda: b.leading, timeout=5)
        wait_until(lambda: b.cp.telemetry.scrapes._value.get() >= 2)
        b.stop()
        tb.join(5)
        assert not b.leading
    finally:
        fleet.close()


def test_cron_schedule_triggers_adaptation(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(lambda revision, role, minute: 0.7)
    try:
        st = settings(fleet, tmp_path, "unused")
        st.actuator = "none"
        runner = Runner(build(st, store), store.engine, "replica-a")
        runner.run_job("adapt-cron", "chat")
        runner.run_job("evaluate")
        with store.factory() as s:
            run = s.execute(select(AdaptationRun)).scalar_one()
        assert run.trigger == "schedule"
        runner.run_job("nonsense")  # counted and logged, never raised
        assert runner.cp.telemetry.job_errors.labels("nonsense")._value.get() == 1
    finally:
        fleet.close()
