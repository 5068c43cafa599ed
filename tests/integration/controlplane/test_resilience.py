"""Restarts, outages and bad data: no duplicate actions, no decisions on missing data, none lost."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from adaspec.controlplane.store.db import DatabaseUnavailable
from adaspec.controlplane.store.models import Action, MetricSample, ScrapeTarget, Speculator
from adaspec.controlplane.wiring import Store, open_store

from .fleet import Fleet
from .pg import PostgresServer, free_port
from .scenario import at, drifting, kinds, run, settings, start


def test_restart_mid_canary_resumes_without_duplicates(db_url: str, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72))
    try:
        st = settings(fleet, tmp_path, db_url)
        first = open_store(db_url)
        run(start(st, first), fleet, range(0, 16))
        with first.factory() as s:
            assert s.execute(select(Speculator.phase)).scalar_one() == "canary"
        first.close()  # the service dies; a new one starts on the same database
        second = open_store(db_url)
        run(start(st, second), fleet, range(16, 40))
        k = kinds(second)
        second.close()
    finally:
        fleet.close()
    assert k == ["drift", "adapt", "start_canary", "canary_check", "canary_check", "promote", "guard_passed"]
    assert [b["action"] for b in fleet.loads] == ["start_canary", "promote"]
    assert (tmp_path / "adapt-calls.log").read_text().split() == ["chat-run1"]


def test_failed_action_is_retried_once_the_runtime_answers(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72))
    try:
        st = settings(fleet, tmp_path, "unused")
        st.local.load_url = f"http://127.0.0.1:{free_port()}/load"  # the runtime is not up yet
        cp = start(st, store)
        run(cp, fleet, range(0, 16))  # canary decided, but nobody answers the load
        with store.factory() as s:
            action = s.execute(select(Action).where(Action.kind == "start_canary")).scalar_one()
            assert action.status == "pending" and action.attempts >= 2
            assert "ConnectError" in (action.last_error or "")
        st.local.load_url = f"{fleet.base}/load"
        cp.actuator = start(st, store).actuator
        run(cp, fleet, range(16, 40))
    finally:
        fleet.close()
    assert [b["action"] for b in fleet.loads] == ["start_canary", "promote"]
    with store.factory() as s:
        assert {a.status for a in s.execute(select(Action)).scalars()} == {"done"}


def test_refused_load_is_failed_with_the_runtimes_message_and_not_retried(
    store: Store, tmp_path: Path
) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72))
    try:
        st = settings(fleet, tmp_path, "unused")
        st.local.load_url = f"{fleet.base}/refuse"  # answers 409 with the runtime's error body
        cp = start(st, store)
        run(cp, fleet, range(0, 20))
    finally:
        fleet.close()
    with store.factory() as s:
        action = s.execute(select(Action).where(Action.kind == "start_canary")).scalar_one()
    assert (action.status, action.attempts) == ("failed", 1)
    assert "(409): manifest sha256 mismatch (param sha256)" in (action.last_error or "")
    assert fleet.loads == []
    assert cp.telemetry.actions.labels("start_canary", "failed")._value.get() == 1


def test_unreachable_endpoint_is_recorded_and_decides_nothing(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72))
    try:
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 8))
        fleet.pods["stable"].down = True
        run(cp, fleet, range(8, 30))  # acceptance collapses while nobody can see it
        with store.factory() as s:
            target = s.execute(
                select(ScrapeTarget).where(ScrapeTarget.url.endswith("/stable/metrics"))
            ).scalar_one()
            assert target.errors == 22 and "503" in (target.last_error or "")
        assert kinds(store) == []
        assert cp.telemetry.scrape_errors.labels("chat")._value.get() == 22
    finally:
        fleet.close()


def test_pod_restart_resets_counters_without_false_drift(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(lambda revision, role, minute: 0.7)
    try:
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 12))
        fleet.pods["stable"].restart()
        run(cp, fleet, range(12, 30))
        with store.factory() as s:
            samples = list(s.execute(select(MetricSample)).scalars())
    finally:
        fleet.close()
    assert kinds(store) == []
    assert min(m.draft_tokens for m in samples) > 0  # never a negative delta
    assert all(m.accepted / m.draft_tokens == pytest.approx(0.7) for m in samples)


def test_vllm_metric_names(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(drifting(candidate_rate=0.72))
    fleet.pods["stable"].vllm = True
    try:
        st = settings(fleet, tmp_path, "unused")
        st.speculators[0].source = "vllm"
        cp = start(st, store)
        run(cp, fleet, range(0, 14))
    finally:
        fleet.close()
    assert kinds(store)[:2] == ["drift", "adapt"]


def test_database_down_at_start_names_the_url_and_retries() -> None:
    url = "postgresql+psycopg://cp:s3cret@127.0.0.1:1/adaspec"
    with pytest.raises(DatabaseUnavailable) as err:
        open_store(url, attempts=2, delay_s=0.01)
    message = str(err.value)
    assert "127.0.0.1:1/adaspec" in message and "after 2 attempts" in message
    assert "s3cret" not in message


def test_database_down_at_start_then_up(tmp_path: Path) -> None:
    server = PostgresServer()
    server.init()
    try:
        from adaspec.controlplane.store.db import make_engine, wait_for

        engine = make_engine(server.url())
        calls: list[float] = []

        def sleep(s: float) -> None:
            calls.append(s)
            if len(calls) == 2:
                server.start()

        wait_for(engine, attempts=5, delay_s=0.01, sleep=sleep)
        assert len(calls) == 2
        engine.dispose()
    finally:
        server.cleanup()


def test_database_down_mid_run_loses_no_decision(tmp_path: Path) -> None:
    server = PostgresServer()
    server.init()
    server.start()
    fleet = Fleet(drifting(candidate_rate=0.72))
    try:
        store = open_store(server.url())
        cp = start(settings(fleet, tmp_path, "unused"), store)
        run(cp, fleet, range(0, 9))
        server.stop()
        for minute in range(9, 13):  # drift begins while the database is down
            fleet.advance(minute)
            with pytest.raises(OperationalError):
                cp.tick(at(minute))
        server.start()
        run(cp, fleet, range(13, 40))
        k = kinds(store)
        store.close()
    finally:
        fleet.close()
        server.cleanup()
    assert k == ["drift", "adapt", "start_canary", "canary_check", "canary_check", "promote", "guard_passed"]


def test_stale_pod_starts_a_new_base_line(store: Store, tmp_path: Path) -> None:
    fleet = Fleet(lambda revision, role, minute: 0.7)
    try:
        st = settings(fleet, tmp_path, "unused")
        st.stale_after_s = 300
        cp = start(st, store)
        run(cp, fleet, range(0, 5))
        fleet.pods["stable"].down = True
        run(cp, fleet, range(5, 15))  # unseen for 10 minutes while its counters keep growing
        fleet.pods["stable"].down = False
        run(cp, fleet, range(15, 18))
        with store.factory() as s:
            stable = list(
                s.execute(
                    select(MetricSample).where(MetricSample.role == "stable").order_by(MetricSample.ts)
                ).scalars()
            )
    finally:
        fleet.close()
    minutes = [int((m.ts - at(0)).total_seconds() // 60) for m in stable]
    assert minutes == [1, 2, 3, 4, 16, 17]  # minute 15 only set the base line again
    assert max(m.draft_tokens for m in stable) == 4000  # no sample spans the gap
