"""Subcommands of the controlplane part (registered by adaspec.cli.main): `adaspec control-plane`."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import threading
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add `control-plane` to the `adaspec` parser (heavy imports happen in the handler)."""
    p = sub.add_parser(
        "control-plane",
        help="run the control plane: scrape acceptance metrics, detect drift, adapt, canary, promote",
        description="Serve /healthz, /metrics, /openapi.json and /api/v1; schedule scrapes and decisions "
        "while this replica holds the lease.",
    )
    p.add_argument(
        "--db", help="database URL (default: settings db_url, or sqlite:///adaspec-controlplane.db)"
    )
    p.add_argument("--config", type=Path, help="YAML settings file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument(
        "--token-file",
        type=Path,
        help="bearer tokens: '<token> <read|admin> [subject]' per line (default: an admin token generated "
        "into <state dir>/admin-token, mode 0600)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="where the generated admin token is kept (default: settings state_dir, else the SQLite "
        "file's directory, else $XDG_STATE_HOME/adaspec/control-plane)",
    )
    p.add_argument("--db-attempts", type=int, default=10, help="connection attempts at start (backoff)")
    p.add_argument("--migrate-only", action="store_true", help="upgrade the schema and exit")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from adaspec.cli.main import CommandError

    from .api import create_app
    from .auth import (
        ADMIN_TOKEN_FILE,
        Authenticator,
        Open,
        TokenFile,
        TokenReview,
        ensure_admin_token,
        kubernetes_review,
    )
    from .config import default_state_dir, load_settings
    from .scheduler import Runner
    from .store.db import DatabaseUnavailable
    from .wiring import build, open_store

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(args.config)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    if args.db:
        settings.db_url = args.db
    if args.token_file:
        settings.auth.mode, settings.auth.token_file = "token-file", args.token_file
    if args.state_dir:
        settings.state_dir = args.state_dir
    try:
        store = open_store(settings.db_url, attempts=args.db_attempts)
    except DatabaseUnavailable as exc:
        raise CommandError(str(exc)) from None
    if args.migrate_only:
        store.close()
        return 0
    log = logging.getLogger("adaspec.controlplane")
    auth: Authenticator
    try:
        if settings.auth.mode == "token-file":
            if settings.auth.token_file is None:  # the embedded default: a generated admin token
                state_dir = settings.state_dir or default_state_dir(settings.db_url)
                path = state_dir / ADMIN_TOKEN_FILE
                created = ensure_admin_token(path)
                event = "admin_token_generated" if created else "admin_token_reused"
                log.info("event=%s path=%s", event, path.resolve())  # where it is, never the token
                settings.auth.token_file = path
            auth = TokenFile.load(settings.auth.token_file)
        elif settings.auth.mode == "tokenreview":
            auth = TokenReview(
                kubernetes_review(),
                settings.auth.admin_groups,
                settings.auth.read_groups,
                register_service_accounts=settings.auth.register_service_accounts,
            )
        else:
            log.warning("event=auth_disabled mode=none")
            auth = Open()
        cp = build(settings, store)
    except (OSError, ValueError) as exc:
        store.close()
        raise CommandError(str(exc)) from None

    import uvicorn

    runner = Runner(cp, store.engine, f"{socket.gethostname()}-{os.getpid()}")
    thread = threading.Thread(target=runner.run, name="cp-leader", daemon=True)
    thread.start()

    def shutdown() -> None:
        runner.stop()  # hands the lease over at once
        thread.join(timeout=30)
        store.close()
        log.info("event=stopped lease=released")

    app = create_app(cp, auth, settings.auth.max_body_bytes, on_shutdown=shutdown)
    # uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, so the exit status says which signal
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    return 0
