"""The control plane's jobs over the store: sync the fleet, scrape, poll runs, evaluate, actuate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from . import lifecycle
from .actions import ActionModel, InvalidActionError, StartAdaptation, parse_action
from .actuators import Actuator, PermanentActionError, execute
from .config import Endpoint, Policies, Settings, SpeculatorConfig
from .counters import Counters, delta
from .discovery import ClusterFleet, Discovered
from .fetch import fetch_many
from .ledger import record, set_phase
from .policies.decision import Decision
from .scrape import PodMetrics, parse_exposition, query_prometheus
from .state import load_state, save_state
from .store.models import Action, AdaptationRun, MetricSample, Revision, ScrapeTarget, Speculator
from .telemetry import Telemetry

log = logging.getLogger("adaspec.controlplane")
KUBE = "kubernetes"  # the actor of decisions a CR's spec made (pause, resume)


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC (the default clock)."""
    return datetime.now(UTC)


class NotFound(LookupError):
    """An unknown speculator or revision (the API answers 404)."""


class Conflict(ValueError):
    """A manual action that does not fit the speculator's phase (the API answers 409)."""


class ControlPlane:
    """Runs the jobs; every method takes `now` so tests drive simulated time."""

    def __init__(
        self,
        settings: Settings,
        factory: sessionmaker[Session],
        actuator: Actuator,
        telemetry: Telemetry | None = None,
        clock: Callable[[], datetime] = utcnow,
        cluster: ClusterFleet | None = None,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.actuator = actuator
        self.telemetry = telemetry or Telemetry()
        self.clock = clock
        self.cluster = cluster
        # the fleet as last synced: the YAML's speculators, then the AdaptiveSpeculators found
        self._fleet: dict[str, SpeculatorConfig] = {c.name: c for c in settings.speculators}
        self._holds: dict[str, str] = {}

    # -- fleet -------------------------------------------------------------------------------------
    def fleet(self) -> list[SpeculatorConfig]:
        """Return the speculators managed now (as of the last `sync_fleet`)."""
        return list(self._fleet.values())

    def policies_for(self, name: str) -> Policies:
        """Return a speculator's policies: its own (the CR's, or the YAML's), else the fleet's."""
        cfg = self._fleet.get(name)
        return cfg.policies if cfg is not None and cfg.policies is not None else self.settings.policies

    def _discover(self) -> list[Discovered]:
        if self.cluster is None:
            return []
        static = {c.name for c in self.settings.speculators}
        found = []
        seen: dict[str, str] = {}
        for d in self.cluster.speculators(self.settings.policies):
            name, ns = d.config.name, d.config.namespace
            if name in static or name in seen:
                # the store names speculators by name alone: the first one keeps it
                log.warning(
                    "event=speculator_skipped speculator=%s namespace=%s reason=name already managed%s",
                    name,
                    ns,
                    f" in {seen[name]}" if name in seen else " (settings)",
                )
                continue
            seen[name] = ns
            found.append(d)
        return found

    def sync_fleet(self, now: datetime) -> None:
        """Bring the store up to the fleet: the configured and discovered speculators (each with its
        initial stable revision) it lacks are created; a CR's `paused` or `pinnedRevision` pauses it
        (a pause its CR made is resumed by the CR only, and a person's pause is never resumed by it)."""
        try:
            discovered = self._discover()
        except Exception as exc:  # the API server is away: manage the fleet as last seen, list again later
            log.warning("event=discovery_failed error=%s", _describe(exc))
            return
        fleet = {c.name: c for c in self.settings.speculators}
        fleet.update({d.config.name: d.config for d in discovered})
        holds = {d.config.name: d.hold for d in discovered}
        with self.factory() as s, s.begin():
            for cfg in fleet.values():
                spec = s.execute(select(Speculator).where(Speculator.name == cfg.name)).scalar_one_or_none()
                if spec is None:
                    spec = Speculator(
                        name=cfg.name,
                        namespace=cfg.namespace,
                        phase="steady",
                        stable_revision=cfg.initial_revision,
                        updated_at=now,
                    )
                    s.add(spec)
                    s.flush()
                    set_phase(s, spec, cfg.initial_revision, "Promoted", "initial revision", now)
                elif spec.namespace != cfg.namespace:
                    spec.namespace = cfg.namespace  # recreated elsewhere under the same name
                if cfg.name in holds:
                    self._hold(s, spec, holds[cfg.name], now)
        self._fleet, self._holds = fleet, holds

    def _hold(self, s: Session, spec: Speculator, hold: str, now: datetime) -> None:
        """Pause or resume `spec` as its CR says (actor `kubernetes`)."""
        if hold and spec.phase != "paused":
            lifecycle.manual_pause(s, spec, KUBE, hold, now, by_cr=True)
        elif not hold and spec.phase == "paused" and load_state(spec).paused_by_cr:
            why = "spec.paused and spec.pinnedRevision cleared"
            lifecycle.manual_resume(s, spec, KUBE, why, now, by_cr=True)

    # -- scraping ----------------------------------------------------------------------------------
    def scrape(self, now: datetime) -> int:
        """Scrape every pod once, store the counter deltas; return the number of pods read."""
        endpoints = self._endpoints()
        pods = asyncio.run(self._gather(endpoints))
        ok = 0
        with self.factory() as s, s.begin():
            specs = {sp.name: sp for sp in s.execute(select(Speculator)).scalars()}
            targets = {(t.speculator_id, t.url): t for t in s.execute(select(ScrapeTarget)).scalars()}
            self._end_series(s, specs, targets, endpoints)
            for (name, url), result in pods.items():
                spec = specs.get(name)
                if spec is None:
                    continue
                target = targets.get((spec.id, url))
                if target is None:
                    target = ScrapeTarget(speculator_id=spec.id, url=url, errors=0)
                    s.add(target)
                self.telemetry.scrapes.inc()
                if isinstance(result, Exception):
                    target.errors = (target.errors or 0) + 1
                    target.last_error, target.last_error_at = _describe(result), now
                    self.telemetry.scrape_errors.labels(name).inc()
                    log.warning(
                        "event=scrape_error speculator=%s target=%s error=%s", name, url, target.last_error
                    )
                    continue
                ok += 1
                self._store_sample(s, spec, target, result[0], result[1], now)
        return ok

    def _store_sample(
        self, s: Session, spec: Speculator, target: ScrapeTarget, pod: PodMetrics, role: str, now: datetime
    ) -> None:
        stale = target.last_ok_at is None or now - target.last_ok_at > timedelta(
            seconds=self.settings.stale_after_s
        )
        previous = None if stale or target.last_counters is None else _counters(target.last_counters)
        d = delta(previous, pod.counters)
        role = pod.role or role
        revision = pod.revision or (spec.canary_revision if role == "canary" else spec.stable_revision)
        if previous is not None and revision is not None and target.last_ok_at is not None:
            interval = (now - target.last_ok_at).total_seconds()
            s.add(
                MetricSample(
                    speculator_id=spec.id,
                    revision=revision,
                    role=role,
                    target=target.url,
                    ts=now,
                    interval_s=interval,
                    drafts=d.drafts,
                    draft_tokens=d.draft_tokens,
                    accepted=d.accepted,
                    per_position=list(d.per_position),
                    generated=d.generated,
                    tokens_per_s=d.generated / interval if interval > 0 else None,
                )
            )
        target.last_counters = {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(pod.counters).items()
        }
        target.last_revision, target.last_role, target.last_ok_at = revision, role, now

    def _endpoints(self) -> dict[str, tuple[SpeculatorConfig, list[Endpoint]]]:
        """Return each direct-scrape speculator's endpoints: the YAML's, or its ready pods' (a failed pod
        listing scrapes nothing for that speculator this round and is logged)."""
        out: dict[str, tuple[SpeculatorConfig, list[Endpoint]]] = {}
        for cfg in self.fleet():
            if cfg.source == "pods":
                if self.cluster is None:
                    continue
                try:
                    out[cfg.name] = (cfg, self.cluster.endpoints(cfg.name, cfg.namespace))
                except Exception as exc:
                    log.warning("event=pod_list_failed speculator=%s error=%s", cfg.name, _describe(exc))
            elif cfg.source != "prometheus":
                out[cfg.name] = (cfg, list(cfg.endpoints))
        return out

    def _end_series(
        self,
        s: Session,
        specs: dict[str, Speculator],
        targets: dict[tuple[int, str], ScrapeTarget],
        endpoints: dict[str, tuple[SpeculatorConfig, list[Endpoint]]],
    ) -> None:
        """Forget the scrape targets of discovered pods that are gone: their series end (a new pod is a
        new target, whose first scrape is only a base line)."""
        for name, (cfg, eps) in endpoints.items():
            spec = specs.get(name)
            if cfg.source != "pods" or spec is None:
                continue
            live = {e.key for e in eps}
            for (sid, url), target in list(targets.items()):
                if sid == spec.id and url not in live:
                    s.delete(target)
                    del targets[(sid, url)]

    async def _gather(
        self, endpoints: dict[str, tuple[SpeculatorConfig, list[Endpoint]]]
    ) -> dict[tuple[str, str], tuple[PodMetrics, str] | Exception]:
        st = self.settings
        out: dict[tuple[str, str], tuple[PodMetrics, str] | Exception] = {}
        direct = [(cfg, e) for cfg, eps in endpoints.values() for e in eps]
        urls = sorted({e.url for _, e in direct})
        bodies = await fetch_many(urls, st.scrape_timeout_s, st.scrape_concurrency)
        for cfg, e in direct:
            body = bodies[e.url]
            if isinstance(body, Exception):
                out[(cfg.name, e.key)] = body
                continue
            try:
                out[(cfg.name, e.key)] = (
                    parse_exposition(body, "vllm" if cfg.source == "vllm" else "runtime"),
                    e.role,
                )
            except ValueError as exc:
                out[(cfg.name, e.key)] = exc
        prom = [c for c in self.fleet() if c.source == "prometheus"]
        if prom:
            async with httpx.AsyncClient(timeout=st.scrape_timeout_s) as client:
                for cfg in prom:
                    await self._prometheus(cfg, client, out)
        return out

    async def _prometheus(
        self,
        cfg: SpeculatorConfig,
        client: httpx.AsyncClient,
        out: dict[tuple[str, str], tuple[PodMetrics, str] | Exception],
    ) -> None:
        base = cfg.prometheus_url or ""
        try:
            pods = await query_prometheus(base, cfg.prometheus_selector, "runtime", client)
        except Exception as exc:  # the whole source is down: one error for it
            out[(cfg.name, base)] = exc
            return
        for pod, metrics in pods.items():
            out[(cfg.name, f"{base}#pod={pod}")] = (metrics, "stable")

    # -- adaptation runs ---------------------------------------------------------------------------
    def poll_runs(self, now: datetime) -> None:
        """Ask the actuator about runs in flight; register the candidates of finished ones."""
        with self.factory() as s:
            runs = s.execute(
                select(AdaptationRun, Speculator)
                .join(Speculator, Speculator.id == AdaptationRun.speculator_id)
                .where(AdaptationRun.status == "running")
            ).all()
            todo = [(r.run_id, sp.name, sp.namespace) for r, sp in runs]
        for run_id, name, ns in todo:
            st = self.actuator.poll_adaptation(name, ns, run_id)
            if st.status == "succeeded" and st.revision:
                self.register_candidate(
                    name, st.revision, st.artifact_uri, st.sha256, st.metrics, run_id, "actuator", now
                )
            elif st.status == "failed":
                self._fail_run(run_id, st.message, now)

    def _fail_run(self, run_id: str, message: str, now: datetime) -> None:
        """Mark a run failed and put its reason (the offline gate's, the exit, the refusal) in the log."""
        with self.factory() as s, s.begin():
            run = s.execute(select(AdaptationRun).where(AdaptationRun.run_id == run_id)).scalar_one_or_none()
            if run is None or run.status != "running":
                return
            run.status, run.message, run.finished_at = "failed", message[:2000], now
            spec = s.get(Speculator, run.speculator_id)
            if spec is not None:
                d = Decision(
                    kind="adaptation_failed",
                    reason=message[:500] or "adaptation run failed",
                    inputs={"run_id": run_id, "parent": run.parent_revision},
                )
                record(s, spec, d, "actuator", now, revision=run.parent_revision)
            log.warning("event=adaptation_failed run=%s message=%s", run_id, message[:200])

    def register_candidate(
        self,
        name: str,
        revision: str,
        artifact_uri: str | None,
        sha256: str | None,
        metrics: dict[str, float],
        run_id: str | None,
        actor: str,
        now: datetime,
    ) -> None:
        """Record a candidate revision (idempotent); finish its run when `run_id` is given."""
        with self.factory() as s, s.begin():
            spec = self._locked(s, name)
            row = s.execute(
                select(Revision).where(Revision.speculator_id == spec.id, Revision.revision == revision)
            ).scalar_one_or_none()
            if row is None:
                set_phase(s, spec, revision, "Candidate", f"registered by {actor}", now)
                row = s.execute(
                    select(Revision).where(Revision.speculator_id == spec.id, Revision.revision == revision)
                ).scalar_one()
                row.parent, row.artifact_uri, row.sha256 = spec.stable_revision, artifact_uri, sha256
                row.offline_metrics = dict(metrics)
            if run_id is not None:
                run = s.execute(
                    select(AdaptationRun).where(AdaptationRun.run_id == run_id)
                ).scalar_one_or_none()
                if run is not None and run.status != "succeeded":
                    run.status, run.candidate_revision, run.finished_at = "succeeded", revision, now

    # -- evaluation and actuation ------------------------------------------------------------------
    def evaluate(self, now: datetime) -> list[Decision]:
        """Run one lifecycle step per speculator (one transaction each); return the decisions."""
        managed = set(self._fleet)
        with self.factory() as s:
            # a speculator no longer in the fleet (its CR deleted) keeps its history but is not evaluated
            names = [n for n in s.execute(select(Speculator.name)).scalars() if n in managed]
        out: list[Decision] = []
        for name in names:
            with self.factory() as s, s.begin():
                spec = self._locked(s, name)
                ctx = lifecycle.StepContext(
                    policies=self.policies_for(name),
                    figures_window_s=max(self.settings.evaluate_interval_s, 300.0),
                )
                decisions = lifecycle.step(s, spec, ctx, now)
                spec.updated_at = now
                figures = lifecycle.status_figures(spec)
                namespace = spec.namespace
            try:
                self.actuator.report_status(name, namespace, figures)
            except Exception as exc:  # best effort: the next evaluation reports again
                log.warning("event=report_status_failed speculator=%s error=%s", name, _describe(exc))
            for d in decisions:
                self.telemetry.decisions.labels(d.kind).inc()
                if d.kind == "drift":
                    self.telemetry.drift_events.labels(name).inc()
                log.info("event=decision speculator=%s kind=%s reason=%s", name, d.kind, d.reason)
            out.extend(decisions)
        return out

    def run_actions(self, now: datetime) -> int:
        """Carry out pending actions in order; return how many succeeded.

        Each is parsed from the store, then carried out. A refusal for good (`PermanentActionError`), or
        a stored action that is not one (`InvalidActionError`: an unknown kind, a bad payload), marks
        the action failed with the message; any other error keeps it pending, retried next round.
        """
        with self.factory() as s:
            pending = list(
                s.execute(select(Action).where(Action.status == "pending").order_by(Action.id)).scalars()
            )
        done = 0
        for action in pending:
            owed: ActionModel | None = None
            try:
                owed = parse_action(action.kind, action.payload)
                execute(self.actuator, owed)
            except (PermanentActionError, InvalidActionError) as exc:  # refused for good: never retry
                with self.factory() as s, s.begin():
                    row = s.get_one(Action, action.id)
                    row.status, row.done_at, row.attempts = "failed", now, row.attempts + 1
                    row.last_error = str(exc)[:2000]
                if isinstance(owed, StartAdaptation):  # the run never started: it failed, say why
                    self._fail_run(owed.run_id, f"not started: {exc}", now)
                self.telemetry.actions.labels(action.kind, "failed").inc()
                log.error("event=action_refused id=%d kind=%s error=%s", action.id, action.kind, exc)
                continue
            except Exception as exc:  # the world said not now: retry next round, keep the error
                with self.factory() as s, s.begin():
                    row = s.get_one(Action, action.id)
                    row.attempts += 1
                    row.last_error = _describe(exc)
                self.telemetry.actions.labels(action.kind, "error").inc()
                log.warning(
                    "event=action_failed id=%d kind=%s error=%s", action.id, action.kind, _describe(exc)
                )
                continue
            with self.factory() as s, s.begin():
                row = s.get_one(Action, action.id)
                row.status, row.done_at, row.attempts = "done", now, row.attempts + 1
            self.telemetry.actions.labels(action.kind, "ok").inc()
            done += 1
        return done

    def tick(self, now: datetime | None = None) -> list[Decision]:
        """One full round (scrape, poll runs, evaluate, actuate); return the decisions made."""
        now = now or self.clock()
        self.sync_fleet(now)
        self.scrape(now)
        self.poll_runs(now)
        decisions = self.evaluate(now)
        self.run_actions(now)
        return decisions

    def mark_schedule_due(self, name: str) -> None:
        """A cron schedule fired: the adaptation trigger sees it at the next evaluation."""
        with self.factory() as s, s.begin():
            spec = self._locked(s, name)
            state = load_state(spec)
            state.schedule_due = True
            save_state(spec, state)

    # -- manual operations (API) -------------------------------------------------------------------
    def manual(
        self, name: str, op: str, actor: str, reason: str, revision: str | None, now: datetime
    ) -> Decision:
        """Promote, roll back, pause or resume by hand; return the recorded decision.

        The row is locked and the AdaptiveSpeculator's hold checked here; the transition itself (and
        whether it fits the phase) is the lifecycle's.
        """
        with self.factory() as s, s.begin():
            spec = self._locked(s, name)
            why = reason or f"manual {op}"
            hold = self._holds.get(name)
            if hold and op == "resume":
                raise Conflict(
                    f"speculator {name} is paused by its AdaptiveSpeculator ({hold}): "
                    "change the resource to resume it"
                )
            if hold and op in ("promote", "rollback"):
                raise Conflict(f"speculator {name}: its AdaptiveSpeculator holds every change ({hold})")
            try:
                if op == "pause":
                    return lifecycle.manual_pause(s, spec, actor, why, now)
                if op == "resume":
                    return lifecycle.manual_resume(s, spec, actor, why, now)
                if op == "promote":
                    return lifecycle.manual_promote(s, spec, actor, why, revision, now)
                if op == "rollback":
                    return lifecycle.manual_rollback(s, spec, actor, why, revision, now)
            except lifecycle.UnknownRevision as exc:
                raise NotFound(str(exc)) from None
            except lifecycle.TransitionError as exc:
                raise Conflict(str(exc)) from None
            raise ValueError(f"op: unknown {op!r} (valid: pause, resume, promote, rollback)")

    def _locked(self, s: Session, name: str) -> Speculator:
        spec = s.execute(
            select(Speculator).where(Speculator.name == name).with_for_update()
        ).scalar_one_or_none()
        if spec is None:
            raise NotFound(f"speculator {name!r} not found")
        return spec


def _counters(raw: dict[str, Any]) -> Counters:
    return Counters(**{**raw, "per_position": tuple(raw.get("per_position") or ())})


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]
