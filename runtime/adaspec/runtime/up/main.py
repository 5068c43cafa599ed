"""`adaspec up`: start both runtimes, embed the control plane, serve the front endpoint; stop it all."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from adaspec.cli.errors import CommandError
from adaspec.runtime.up.config import UpSettings, control_plane_data, load_up_settings, runtime_yaml
from adaspec.runtime.up.processes import (
    RUNTIME_TOKEN_FILE,
    Revision,
    Runtime,
    ensure_runtime_token,
    free_port,
    serve_argv,
    wait_ready,
)
from adaspec.runtime.up.proxy import Proxy, Split

log = logging.getLogger("adaspec.up")
ROLES = ("stable", "canary")
STATIC = "static"


class Stopped(Exception):
    """SIGTERM arrived: stop everything and exit 0."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def serving_revisions(factory: Any, speculator: str) -> dict[str, Revision | None]:
    """Return what each runtime should serve from the start, from the control plane's store: the stable
    revision for both, the canary revision (while one runs) for the canary; None means the static draft."""
    from sqlalchemy import select

    from adaspec.controlplane.store.models import Revision as RevisionRow
    from adaspec.controlplane.store.models import Speculator

    with factory() as s:
        sp = s.execute(select(Speculator).where(Speculator.name == speculator)).scalar_one_or_none()
        if sp is None:
            return {role: None for role in ROLES}

        def row(revision: str | None) -> Revision | None:
            if revision in (None, STATIC):
                return None
            r = s.execute(
                select(RevisionRow).where(
                    RevisionRow.speculator_id == sp.id, RevisionRow.revision == revision
                )
            ).scalar_one_or_none()
            if r is None or not r.artifact_uri:
                log.warning("event=resume_without_artifact revision=%s serving=static", revision)
                return None
            return Revision(r.revision, r.artifact_uri, r.sha256 or "")

        stable = row(sp.stable_revision)
        canary = row(sp.canary_revision) if sp.canary_revision else stable
    return {"stable": stable, "canary": canary}


def canary_active(factory: Any, speculator: str) -> Callable[[], bool]:
    """Return a function telling whether the control plane has a canary revision in service."""
    from sqlalchemy import select

    from adaspec.controlplane.store.models import Speculator

    def active() -> bool:
        with factory() as s:
            rev = s.execute(select(Speculator.canary_revision).where(Speculator.name == speculator)).scalar()
        return rev is not None

    return active


def front_app(proxy: Proxy, control_api: Any, on_shutdown: Callable[[], None]) -> Any:
    """Return the one ASGI app: /v1/* proxied, /health, and the control plane's app for the rest."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Mount, Route

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "served": proxy.served})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.aclose()
        on_shutdown()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    routes = [
        Route("/v1/{path:path}", proxy.handle, methods=methods),
        Route("/health", health),
        Mount("/", app=control_api),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _announce(state: Path, url: str, admin_token: Path, runtimes: dict[str, Runtime]) -> None:
    info = {
        "openai_base_url": f"{url}/v1",
        "control_plane_url": url,
        "admin_token_file": str(admin_token),
        "runtimes": {
            role: {"url": rt.url, "metrics_url": rt.metrics_url, "pid": rt.proc.pid if rt.proc else None}
            for role, rt in runtimes.items()
        },
        "pid": os.getpid(),
    }
    (state / "up.json").write_text(json.dumps(info, indent=2) + "\n")
    lines = [
        "adaspec up: ready",
        f"  OpenAI endpoint : {url}/v1",
        f"  control plane   : {url}/api/v1/speculators",
        f"  admin token     : {admin_token} (first field of its first non-comment line)",
        *(f"  {role:<16}: {rt.url} (metrics {rt.metrics_url})" for role, rt in runtimes.items()),
        f"  state           : {state} (up.json, logs/, capture/, runs/, controlplane.db)",
    ]
    print("\n".join(lines), flush=True)


def run_up(args: argparse.Namespace) -> int:
    """Run the fleet until SIGTERM or ^C; return 0 (or raise KeyboardInterrupt, exit 130)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("httpx", "apscheduler"):  # a line per scrape and per job run otherwise
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))
    overrides = {
        "target_model": args.target_model,
        "static_draft": args.static_draft,
        "state_dir": args.state_dir,
        "host": args.host,
        "port": args.port,
        "preset": args.preset,
    }
    try:
        settings = load_up_settings(args.config, overrides)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(settings, args.log_level)
    except Stopped:
        log.info("event=stopped signal=SIGTERM")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(settings: UpSettings, log_level: str) -> int:
    from pydantic import ValidationError

    from adaspec.controlplane.api import create_app
    from adaspec.controlplane.auth import ADMIN_TOKEN_FILE, Authenticator, Open, TokenFile, ensure_admin_token
    from adaspec.controlplane.config import Settings
    from adaspec.controlplane.scheduler import Runner
    from adaspec.controlplane.store.db import DatabaseUnavailable
    from adaspec.controlplane.wiring import Store, build, open_store

    state = settings.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    token_file = state / RUNTIME_TOKEN_FILE
    capture_dir = state / "capture"
    try:
        ensure_runtime_token(token_file)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    runtimes = {
        role: Runtime(role, free_port(), free_port(), state / "logs" / f"{role}.log") for role in ROLES
    }
    data = control_plane_data(
        settings,
        state,
        {role: rt.metrics_url for role, rt in runtimes.items()},
        {role: rt.load_url for role, rt in runtimes.items()},
        token_file,
        capture_dir,
    )
    try:
        cp_settings = Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise CommandError(f"control_plane: {loc}: {first['msg']}") from None
    port = settings.port or free_port(settings.host)
    url = f"http://{settings.host}:{port}"
    store: Store | None = None
    runner: Runner | None = None
    thread: threading.Thread | None = None
    stopped = threading.Event()

    def shutdown() -> None:
        if stopped.is_set():
            return
        stopped.set()
        if runner is not None and thread is not None:
            runner.stop()  # hands the lease over at once
            thread.join(timeout=30)
        if store is not None:
            store.close()
        for rt in runtimes.values():
            code = rt.stop()
            log.info("event=runtime_stopped role=%s code=%s", rt.role, code)

    try:
        try:
            store = open_store(cp_settings.db_url)
        except DatabaseUnavailable as exc:
            raise CommandError(str(exc)) from None
        resume = serving_revisions(store.factory, settings.speculator)
        controller_config = state / "runtime.yaml"
        controller_config.write_text(runtime_yaml(settings))
        for role, rt in runtimes.items():
            rt.start(
                serve_argv(
                    rt,
                    target_model=settings.target_model,
                    static_draft=settings.static_draft,
                    strategy=settings.strategy,
                    controller_config=controller_config,
                    token_file=token_file,
                    state_dir=state / role,
                    capture_dir=capture_dir,
                    revision=resume[role],
                    extra=settings.serve_args,
                )
            )
        try:
            wait_ready(list(runtimes.values()), settings.ready_timeout_s)
        except (RuntimeError, TimeoutError) as exc:
            raise CommandError(str(exc)) from None
        auth: Authenticator
        admin_token = cp_settings.auth.token_file or state / ADMIN_TOKEN_FILE
        if cp_settings.auth.mode == "none":
            log.warning("event=auth_disabled mode=none")
            auth = Open()
        else:
            if cp_settings.auth.token_file is None:
                created = ensure_admin_token(admin_token)
                event = "admin_token_generated" if created else "admin_token_reused"
                log.info("event=%s path=%s", event, admin_token)  # where it is, never the token
            auth = TokenFile.load(admin_token)
        cp = build(cp_settings, store)
        runner = Runner(cp, store.engine, f"{socket.gethostname()}-{os.getpid()}")
        thread = threading.Thread(target=runner.run, name="cp-leader", daemon=True)
        thread.start()
        api = create_app(cp, auth, cp_settings.auth.max_body_bytes)
        upstreams = {role: rt.url for role, rt in runtimes.items()}
        split = Split(canary_active(store.factory, settings.speculator), settings.canary_share)
        app = front_app(Proxy(upstreams, split, settings.proxy_timeout_s), api, shutdown)

        import uvicorn

        config = uvicorn.Config(
            app, host=settings.host, port=port, log_level=log_level.lower(), access_log=False
        )
        server = uvicorn.Server(config)
        _announce(state, url, admin_token, runtimes)
        server.run()
        return 0
    finally:
        shutdown()
