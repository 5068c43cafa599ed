"""HTTP API: fleet overview, revisions, metrics, the decision log, manual promote/rollback/pause/resume."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import Authenticator, Open, Principal
from .auth import Scope as AuthScope
from .service import Conflict, ControlPlane, NotFound
from .state import LifecycleState, SpeculatorPhase, load_state
from .store.models import DecisionRecord, MetricSample, Revision, RevisionPhase, Speculator

NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # the SpeculatorRevision CRD's pattern for revisions


class ManualAction(BaseModel):
    """Body of promote, rollback, pause and resume."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=500)
    revision: str | None = Field(default=None, pattern=NAME, max_length=200)


class CandidateIn(BaseModel):
    """A candidate revision reported by an adaptation job."""

    model_config = ConfigDict(extra="forbid")
    revision: str = Field(pattern=NAME, max_length=200)
    artifact_uri: str | None = Field(default=None, max_length=2000)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    metrics: dict[str, float] = Field(default_factory=dict, max_length=100)
    run_id: str | None = Field(default=None, max_length=200)


class BodyLimit:
    """Answer 413 to request bodies over `limit` bytes (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await JSONResponse({"detail": f"body over {self.limit} bytes"}, status_code=413)(
                scope, receive, send
            )
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"body over {self.limit} bytes")
            return message

        await self.app(scope, counting, send)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _spec(sp: Speculator) -> dict[str, Any]:
    phase: SpeculatorPhase = sp.phase
    return {
        "name": sp.name,
        "namespace": sp.namespace,
        "phase": phase,
        "stableRevision": sp.stable_revision,
        "canaryRevision": sp.canary_revision,
        "acceptanceRate": sp.acceptance_rate,
        "meanAcceptedLength": sp.mean_accepted_length,
        "tokensPerSecond": sp.tokens_per_second,
        "lastDriftTime": _iso(sp.last_drift_at),
        "lastAdaptationTime": _iso(sp.last_adaptation_at),
        **_progress(load_state(sp)),
    }


def _progress(state: LifecycleState) -> dict[str, Any]:
    """The policies' progress, read-only: the drift detector on the stable revision, the canary's checks."""
    drift = state.drift
    out: dict[str, Any] = {
        "drift": {
            "revision": drift.revision if drift else None,
            "reference": drift.reference if drift else None,
            "statistic": drift.statistic if drift else 0.0,
            "drifted": drift.drifted if drift else False,
        }
    }
    canary = state.canary
    if canary:
        out["canary"] = {
            "revision": canary.revision,
            "successes": canary.successes,
            "failures": canary.failures,
            "inconclusive": canary.inconclusive,
        }
    return out


def _decision(d: DecisionRecord, names: dict[int, str]) -> dict[str, Any]:
    return {
        "id": d.id,
        "speculator": names.get(d.speculator_id or -1),
        "at": _iso(d.at),
        "kind": d.kind,
        "reason": d.reason,
        "actor": d.actor,
        "revision": d.revision,
        "inputs": d.inputs,
    }


def principal(request: Request) -> Principal:
    """Return the caller of `request` (401 without a valid bearer token)."""
    auth: Authenticator = request.app.state.auth
    if isinstance(auth, Open):
        return Principal("anonymous", "admin")
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    found = auth.authenticate(token.strip())
    if found is None:
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return found


def _needs(scope: AuthScope) -> Any:
    def check(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if not p.allows(scope):
            raise HTTPException(403, f"{p.subject} has scope {p.scope}; this needs {scope}")
        return p

    return check


Reader = Annotated[Principal, Depends(_needs("read"))]
Admin = Annotated[Principal, Depends(_needs("admin"))]
Registrar = Annotated[Principal, Depends(_needs("register"))]  # admin, or an adaptation Job's token


def create_app(
    cp: ControlPlane,
    auth: Authenticator,
    max_body_bytes: int = 65536,
    on_shutdown: Callable[[], None] | None = None,
) -> FastAPI:
    """Return the ASGI app serving /healthz, /metrics, /openapi.json and /api/v1.

    `on_shutdown` runs when the server stops (before uvicorn re-raises the signal that stopped it).
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title="adaspec control plane", version="v1", docs_url=None, redoc_url=None, lifespan=lifespan
    )
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    app.state.auth = auth

    def one(name: str) -> Speculator:
        with cp.factory() as s:
            sp = s.execute(select(Speculator).where(Speculator.name == name)).scalar_one_or_none()
        if sp is None:
            raise HTTPException(404, f"speculator {name!r} not found")
        return sp

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        with cp.factory() as s:
            s.execute(select(1))
        return {"status": "ok"}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(cp.telemetry.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/api/v1/speculators")
    def fleet(_: Reader) -> dict[str, Any]:
        with cp.factory() as s:
            rows = list(s.execute(select(Speculator).order_by(Speculator.name)).scalars())
        return {"items": [_spec(r) for r in rows]}

    @app.get("/api/v1/speculators/{name}")
    def speculator(name: str, _: Reader) -> dict[str, Any]:
        return _spec(one(name))

    @app.get("/api/v1/speculators/{name}/revisions")
    def revisions(name: str, _: Reader) -> dict[str, Any]:
        sp = one(name)
        with cp.factory() as s:
            revs = list(
                s.execute(
                    select(Revision).where(Revision.speculator_id == sp.id).order_by(Revision.id)
                ).scalars()
            )
            history = list(
                s.execute(
                    select(RevisionPhase)
                    .where(RevisionPhase.revision_id.in_([r.id for r in revs]))
                    .order_by(RevisionPhase.id)
                ).scalars()
            )
        return {
            "items": [
                {
                    "revision": r.revision,
                    "parent": r.parent,
                    "phase": r.phase,
                    "artifactUri": r.artifact_uri,
                    "sha256": r.sha256,
                    "metrics": r.offline_metrics,
                    "created": _iso(r.created_at),
                    "history": [
                        {"phase": h.phase, "reason": h.reason, "at": _iso(h.at)}
                        for h in history
                        if h.revision_id == r.id
                    ],
                }
                for r in revs
            ]
        }

    @app.get("/api/v1/speculators/{name}/metrics")
    def samples(
        name: str, _: Reader, limit: Annotated[int, Query(ge=1, le=5000)] = 500, since: datetime | None = None
    ) -> dict[str, Any]:
        sp = one(name)
        q = select(MetricSample).where(MetricSample.speculator_id == sp.id)
        if since is not None:
            q = q.where(MetricSample.ts > since)
        with cp.factory() as s:
            rows = list(s.execute(q.order_by(MetricSample.id.desc()).limit(limit)).scalars())
        return {
            "items": [
                {
                    "ts": _iso(m.ts),
                    "revision": m.revision,
                    "role": m.role,
                    "target": m.target,
                    "drafts": m.drafts,
                    "draftTokens": m.draft_tokens,
                    "acceptedTokens": m.accepted,
                    "acceptedPerPosition": m.per_position,
                    "generatedTokens": m.generated,
                    "tokensPerSecond": m.tokens_per_s,
                }
                for m in reversed(rows)
            ]
        }

    @app.get("/api/v1/decisions")
    def decisions(
        _: Reader,
        speculator: str | None = None,
        kind: str | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    ) -> dict[str, Any]:
        q = select(DecisionRecord)
        if speculator is not None:
            q = q.where(DecisionRecord.speculator_id == one(speculator).id)
        if kind is not None:
            q = q.where(DecisionRecord.kind == kind)
        with cp.factory() as s:
            rows = list(s.execute(q.order_by(DecisionRecord.id.desc()).limit(limit)).scalars())
            names = {int(i): str(n) for i, n in s.execute(select(Speculator.id, Speculator.name))}
        return {"items": [_decision(d, names) for d in reversed(rows)]}

    @app.post("/api/v1/speculators/{name}/revisions", status_code=201)
    def candidate(name: str, body: CandidateIn, who: Registrar) -> dict[str, Any]:
        found = one(name)
        account = who.subject.split(":")
        if who.scope == "register" and account[:2] == ["system", "serviceaccount"]:
            if len(account) != 4 or account[2] != found.namespace:  # a Job registers for its namespace
                raise HTTPException(403, f"{who.subject} may register revisions in its own namespace only")
        now = cp.clock()
        cp.register_candidate(
            name,
            body.revision,
            body.artifact_uri,
            body.sha256,
            body.metrics,
            body.run_id,
            f"api:{who.subject}",
            now,
        )
        return {"revision": body.revision, "phase": "Candidate"}

    def manual(name: str, op: str, body: ManualAction, who: Principal) -> dict[str, Any]:
        one(name)
        try:
            d = cp.manual(name, op, f"api:{who.subject}", body.reason, body.revision, cp.clock())
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except Conflict as exc:
            raise HTTPException(409, str(exc)) from None
        cp.run_actions(cp.clock())
        return {"kind": d.kind, "reason": d.reason, "inputs": d.inputs}

    @app.post("/api/v1/speculators/{name}/promote")
    def promote(name: str, body: ManualAction, who: Admin) -> dict[str, Any]:
        return manual(name, "promote", body, who)

    @app.post("/api/v1/speculators/{name}/rollback")
    def rollback(name: str, body: ManualAction, who: Admin) -> dict[str, Any]:
        return manual(name, "rollback", body, who)

    @app.post("/api/v1/speculators/{name}/pause")
    def pause(name: str, body: ManualAction, who: Admin) -> dict[str, Any]:
        return manual(name, "pause", body, who)

    @app.post("/api/v1/speculators/{name}/resume")
    def resume(name: str, body: ManualAction, who: Admin) -> dict[str, Any]:
        return manual(name, "resume", body, who)

    return app
