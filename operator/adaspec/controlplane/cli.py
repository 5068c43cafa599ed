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
    p.add_argument("--token-file", type=Path, help="bearer tokens: '<token> <read|admin> [subject]' per line")
    p.add_argument("--db-attempts", type=int, default=10, help="connection attempts at start (backoff)")
    p.add_argument("--migrate-only", action="store_true", help="upgrade the schema and exit")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from adaspec.cli.main import CommandError

    from .api import create_app
    from .auth import Authenticator, Open, TokenFile, TokenReview, kubernetes_review
    from .config import load_settings
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
    try:
        store = open_store(settings.db_url, attempts=args.db_attempts)
    except DatabaseUnavailable as exc:
        raise CommandError(str(exc)) from None
    if args.migrate_only:
        store.close()
        return 0
    auth: Authenticator
    try:
        if settings.auth.mode == "token-file":
            if settings.auth.token_file is None:
                raise CommandError("auth: mode token-file needs --token-file or auth.token_file")
            auth = TokenFile.load(settings.auth.token_file)
        elif settings.auth.mode == "tokenreview":
            auth = TokenReview(kubernetes_review(), settings.auth.admin_groups, settings.auth.read_groups)
        else:
            logging.getLogger("adaspec.controlplane").warning("event=auth_disabled mode=none")
            auth = Open()
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None

    import uvicorn

    cp = build(settings, store)
    runner = Runner(cp, store.engine, f"{socket.gethostname()}-{os.getpid()}")
    thread = threading.Thread(target=runner.run, name="cp-leader", daemon=True)
    thread.start()

    def shutdown() -> None:
        runner.stop()  # hands the lease over at once
        thread.join(timeout=30)
        store.close()
        logging.getLogger("adaspec.controlplane").info("event=stopped lease=released")

    app = create_app(cp, auth, settings.auth.max_body_bytes, on_shutdown=shutdown)
    # uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, so the exit status says which signal
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower(), access_log=False)
    return 0
