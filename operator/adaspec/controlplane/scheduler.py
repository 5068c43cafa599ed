"""Scheduling: APScheduler with its job store in the control plane's database, run by one replica at a
time (a lease row in the same database); a second replica waits and takes over when the lease expires.

APScheduler persists a job as a textual reference to a function plus pickled arguments, so the stored
jobs point at `job_placeholder` with (kind, speculator) arguments, and `ServiceExecutor` runs the
matching method of the live ControlPlane instead: no module-level registry of instances is needed.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine

from .service import ControlPlane
from .store.db import acquire_lease, make_engine, release_lease

LEASE = "adaspec-controlplane-scheduler"
JOBS_TABLE = "apscheduler_jobs"
log = logging.getLogger("adaspec.controlplane.scheduler")


def job_placeholder(kind: str, name: str = "") -> None:
    """Stand-in target of stored jobs; `ServiceExecutor` runs the real job. Never called directly."""
    raise RuntimeError(f"job {kind}:{name} must run through ServiceExecutor")


class ServiceExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs a stored job as `run(*job.args)` on a thread pool (missed runs coalesce into one)."""

    def __init__(self, run: Callable[..., None], workers: int = 4) -> None:
        super().__init__()
        self._run = run
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="cp-job")

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def work() -> list[JobExecutionEvent]:
            self._run(*job.args)
            return [JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, job._jobstore_alias, run_times[-1])]

        def done(f: Future[list[JobExecutionEvent]]) -> None:
            exc = f.exception()
            if exc is not None:
                self._run_job_error(job.id, exc, exc.__traceback__)
            else:
                self._run_job_success(job.id, f.result())

        self._pool.submit(work).add_done_callback(done)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait)


class Runner:
    """Leader election plus the scheduler the leader runs."""

    def __init__(self, cp: ControlPlane, engine: Engine, holder: str) -> None:
        self.cp, self.holder = cp, holder
        self._url = engine.url.render_as_string(hide_password=False)
        self._jobs_engine = engine
        self.scheduler: BackgroundScheduler | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._cron: dict[str, str] = {}  # cron job id -> the crontab it was added with

    @property
    def leading(self) -> bool:
        return self.scheduler is not None

    def run_job(self, kind: str, name: str = "") -> None:
        """Run one job now, timed and counted; errors are logged and counted, never raised."""
        started = time.perf_counter()
        now = self.cp.clock()
        try:
            if kind == "scrape":
                self.cp.sync_fleet(now)  # AdaptiveSpeculators created, changed or deleted since
                self._sync_cron()
                self.cp.scrape(now)
            elif kind == "evaluate":
                self.cp.poll_runs(now)
                self.cp.evaluate(now)
                self.cp.run_actions(now)
            elif kind == "adapt-cron":
                self.cp.mark_schedule_due(name)
            else:
                raise ValueError(f"job kind: unknown {kind!r}")
        except Exception as exc:  # the database or a source is down: next run retries
            self.cp.telemetry.job_errors.labels(kind).inc()
            first = traceback.format_exception_only(exc)[-1].strip()
            log.error("event=job_failed job=%s speculator=%s error=%s", kind, name, first[:300])
        finally:
            self.cp.telemetry.job_duration.labels(kind).observe(time.perf_counter() - started)

    def _start_scheduler(self) -> None:
        st = self.cp.settings
        # its own engine: the job store disposes of it while the scheduler's thread may still read
        self._jobs_engine = make_engine(self._url)
        sched = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self._jobs_engine, tablename=JOBS_TABLE)},
            executors={"default": ServiceExecutor(self.run_job)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=UTC,
        )
        sched.start(paused=True)
        ref = f"{__name__}:job_placeholder"
        sched.add_job(
            ref,
            "interval",
            seconds=st.scrape_interval_s,
            id="scrape",
            args=("scrape",),
            replace_existing=True,
        )
        sched.add_job(
            ref,
            "interval",
            seconds=st.evaluate_interval_s,
            id="evaluate",
            args=("evaluate",),
            replace_existing=True,
        )
        self._cron = {}
        self._sync_cron(sched)
        sched.resume()
        self.scheduler = sched

    def _sync_cron(self, sched: BackgroundScheduler | None = None) -> None:
        """Keep one cron job per speculator schedule of the fleet (a CR's schedule may change)."""
        sched = sched or self.scheduler
        if sched is None:
            return
        ref = f"{__name__}:job_placeholder"
        wanted = {f"adapt-cron:{c.name}": c.schedule for c in self.cp.fleet() if c.schedule}
        for job_id, cron in wanted.items():
            if self._cron.get(job_id) != cron:
                trigger = CronTrigger.from_crontab(cron, timezone=UTC)
                name = job_id.split(":", 1)[1]
                sched.add_job(ref, trigger, id=job_id, args=("adapt-cron", name), replace_existing=True)
        for job in sched.get_jobs():
            if job.id.startswith("adapt-cron:") and job.id not in wanted:
                job.remove()
        self._cron = dict(wanted)

    def _stop_scheduler(self) -> None:
        with self._lock:
            sched, self.scheduler = self.scheduler, None
        if sched is not None:
            sched.shutdown(wait=True)
            self._jobs_engine.dispose()  # again, now that the scheduler's thread has ended

    def step(self, now: datetime | None = None) -> bool:
        """Take or renew the lease; start or stop scheduling to match; return whether we lead."""
        now = now or datetime.now(UTC)
        try:
            held = acquire_lease(self.cp.factory, LEASE, self.holder, self.cp.settings.lease_ttl_s, now)
        except Exception as exc:  # database down: stop scheduling until it answers again
            log.error("event=lease_error holder=%s error=%s", self.holder, str(exc).splitlines()[0][:300])
            held = False
        if held and not self.leading:
            log.info("event=leader_acquired holder=%s", self.holder)
            self._start_scheduler()
        elif not held and self.leading:
            log.info("event=leader_lost holder=%s", self.holder)
            self._stop_scheduler()
        self.cp.telemetry.leader.set(1 if self.leading else 0)
        return self.leading

    def run(self) -> None:
        """Loop until `stop()`: renew the lease every third of its TTL."""
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.cp.settings.lease_ttl_s / 3)
        self._stop_scheduler()

    def stop(self, release: bool = True) -> None:
        """End the loop (from another thread); with `release`, hand the lease over at once."""
        self._stop.set()
        if release:
            try:
                release_lease(self.cp.factory, LEASE, self.holder)
            except Exception as exc:
                log.warning("event=lease_release_failed error=%s", str(exc).splitlines()[0][:300])

    def crash(self) -> None:
        """Stop scheduling without releasing the lease (tests: a replica that dies)."""
        self._stop.set()
        self._stop_scheduler()
