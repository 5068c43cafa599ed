"""`adaspec serve`: check the command line, listen, load in the background, serve, drain on SIGTERM."""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adaspec.cli.errors import CommandError
from adaspec.runtime.capture import CapturedRequest, CaptureSink, ShardWriter, steps_of
from adaspec.runtime.server.locations import LocationError, resolve
from adaspec.runtime.server.tokens import STATIC, AdminTokens
from adaspec.runtime.settings import RuntimeSettings, SettingsError, duration_seconds, load_settings
from adaspec.runtime.strategies import proposers_for

if TYPE_CHECKING:  # the engine (torch) is imported only once the command line has been checked
    import uvicorn

    from adaspec.runtime.server.app import ServeState
    from adaspec.runtime.server.scheduler import Job, Outcome

log = logging.getLogger("adaspec.serve")


@dataclass(frozen=True)
class ServePlan:
    """The command line, checked: everything cheap to verify before listening."""

    args: argparse.Namespace
    settings: RuntimeSettings
    target_dir: Path
    tokenizer_dir: Path
    static_dir: Path | None
    feature_dir: Path | None
    artifact: str
    proposers: tuple[str, ...]


def plan(args: argparse.Namespace) -> ServePlan:
    """Check flags, locations and settings; ValueError naming the flag or setting otherwise."""
    settings = load_settings(args.controller_config)
    if args.engine != "native":
        raise ValueError(f"--engine {args.engine!r} is not available in this runtime (supported: native)")
    target = resolve(args.target_model, "--target-model")
    tokenizer = resolve(args.tokenizer, "--tokenizer") if args.tokenizer else target
    static = resolve(args.static_draft, "--static-draft") if args.static_draft else None
    names = proposers_for(args.strategy)
    if not settings.adaptive.enabled:
        if args.strategy == "adaptive":
            raise ValueError("--strategy adaptive needs adaptive.enabled: true in --controller-config")
        names = tuple(n for n in names if n != "adaptive")
    if "static" in names and static is None:
        raise ValueError(f"--strategy {args.strategy} needs --static-draft")
    feature = resolve(args.feature_draft, "--feature-draft") if args.feature_draft else None
    if feature is not None and "feature" not in names:
        raise ValueError(f"--feature-draft needs a strategy with the feature draft, not {args.strategy!r}")
    if args.draft_revision != STATIC and not args.draft_artifact:
        raise ValueError(f"--draft-revision {args.draft_revision!r} needs --draft-artifact (its directory)")
    if args.draft_artifact:
        if "adaptive" not in names:
            raise ValueError(
                f"--draft-artifact needs a strategy with an adaptive draft, not {args.strategy!r}"
            )
        resolve(args.draft_artifact, "--draft-artifact")
    return ServePlan(args, settings, target, tokenizer, static, feature, args.draft_artifact, names)


def state_dir(args: argparse.Namespace) -> Path:
    """--state-dir, or $XDG_STATE_HOME/adaspec/serve-PORT (~/.local/state without XDG_STATE_HOME)."""
    if args.state_dir:
        return Path(args.state_dir)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "adaspec" / f"serve-{args.port}"


def admin_tokens(args: argparse.Namespace) -> AdminTokens:
    """Tokens from --admin-token-file, or a generated one in the state directory (logged: where, not what)."""
    if args.admin_token_file:
        return AdminTokens.from_file(Path(args.admin_token_file))
    tokens = AdminTokens.generated(state_dir(args))
    log.info("event=admin_token file=%s", tokens.source)
    return tokens


def load(p: ServePlan, state: ServeState) -> None:
    """Load, verify and calibrate; then hand the engine to a scheduler and report ready."""
    from adaspec.runtime.controller import controller_config
    from adaspec.runtime.engine import build_engine
    from adaspec.runtime.models import load_tokenizer, tokenizer_fingerprint
    from adaspec.runtime.proposers.adaptive import adaptive_config
    from adaspec.runtime.proposers.vocab import draft_counts
    from adaspec.runtime.server.revisions import RevisionManager, RevisionRecord
    from adaspec.runtime.server.scheduler import FifoScheduler

    args, t0 = p.args, time.monotonic()
    adaptive = adaptive_config(p.settings.adaptive, background=True)
    engine = build_engine(
        p.target_dir,
        p.static_dir,
        args.strategy,
        device=args.device,
        controller=controller_config(p.settings.controller),
        adaptive=adaptive,
        disabled=() if p.settings.adaptive.enabled else ("adaptive",),
        tokenizer_dir=p.tokenizer_dir,
        feature_draft_dir=p.feature_dir,
    )
    tokenizer = load_tokenizer(p.tokenizer_dir)
    static = engine.proposers.get("static") or engine.proposers.get("adaptive")
    lm = getattr(static, "lm", None)
    static_model = copy.deepcopy(lm.model).to("cpu") if lm is not None else None
    static_counts = draft_counts(p.static_dir, engine.target.vocab_size) if p.static_dir else None
    revisions = RevisionManager(
        engine,
        tokenizer_fingerprint(p.tokenizer_dir),
        static_model,
        adaptive,
        args.device,
        args.role,
        static_counts,
    )
    if p.artifact:
        revisions.activate(
            revisions.verify(args.draft_revision, p.artifact, args.draft_sha256, args.role, "start")
        )
    else:
        revisions.current = RevisionRecord(STATIC, "", "", args.role, "start", time.time())
        revisions.history.append(revisions.current)
    metrics = state.metrics
    sink = capture_sink(p)
    state.capture = sink
    scheduler = FifoScheduler(
        engine,
        tokenizer,
        metrics,
        args.max_queue,
        on_finished=capture_hook(sink, revisions) if sink else None,
    )
    metrics.bind(lambda: scheduler.waiting, lambda: scheduler.running)
    metrics.train_failures.set_function(revisions.train_failures)

    def serving() -> tuple[str, int]:
        current = revisions.current
        return (current.revision if current else STATIC), revisions.adaptive_version()

    metrics.revision_source = serving
    metrics.set_revision(*serving())
    state.tokenizer = tokenizer
    state.revisions = revisions
    state.max_positions = engine.target.max_positions
    state.vocab_size = engine.vocab
    state.scheduler = scheduler
    if state.status == "loading":
        state.status = "ok"
    log.info(
        "event=ready seconds=%.1f strategy=%s proposers=%s revision=%s role=%s",
        time.monotonic() - t0,
        args.strategy,
        ",".join(engine.proposers) or "-",
        serving()[0],
        args.role,
    )


def capture_sink(p: ServePlan) -> CaptureSink | None:
    """The traffic capture the settings ask for (None when off or at sample rate 0)."""
    cap = p.settings.capture
    if not cap.enabled or cap.sample_rate <= 0:
        return None
    directory = Path(p.args.capture_dir) if p.args.capture_dir else state_dir(p.args) / "capture"
    writer = ShardWriter(directory, cap.max_bytes, duration_seconds(cap.retention))
    log.info(
        "event=capture directory=%s sample_rate=%s (prompts and outputs are stored)",
        directory,
        cap.sample_rate,
    )
    return CaptureSink(writer, cap.sample_rate)


def capture_hook(sink: CaptureSink, revisions: Any) -> Callable[[Job, Outcome], None]:
    """What the scheduler calls after each request: offer it to the capture sink."""

    def hook(job: Job, outcome: Outcome) -> None:
        if outcome.finish_reason == "cancelled":
            return
        req = job.request
        current = revisions.current

        def record() -> CapturedRequest:
            return CapturedRequest(
                id=uuid.uuid4().hex,
                time=time.time(),
                revision=current.revision if current is not None else STATIC,
                role=revisions.role,
                tag=req.tag,
                prompt_ids=list(req.prompt_ids),
                output_ids=list(outcome.token_ids),
                steps=steps_of(outcome.steps),
                finish_reason=outcome.finish_reason,
                sampling={
                    "temperature": req.sampling.temperature,
                    "top_p": req.sampling.top_p,
                    "top_k": req.sampling.top_k,
                },
                tokenizer_sha256=revisions.tokenizer_sha256,
            )

        sink.offer(record)

    return hook


def _server_class() -> Any:
    """uvicorn's server, which also stops admitting requests the moment SIGTERM arrives."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config, state: ServeState) -> None:
            super().__init__(config)
            self._state = state

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self._state.status in ("ok", "loading"):
                self._state.status = "draining"
                log.info("event=draining signal=%s", sig)
            if self._state.scheduler is not None:
                self._state.scheduler.drain()
            super().handle_exit(sig, frame)

    return DrainingServer


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; return 0, or 2 when the models could not be loaded."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    try:
        p = plan(args)
        tokens = admin_tokens(args)
    except (SettingsError, LocationError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    import uvicorn
    from prometheus_client import start_http_server
    from starlette.applications import Starlette

    from adaspec.runtime.server.app import ServeState, build_app
    from adaspec.runtime.server.metrics import RuntimeMetrics

    metrics = RuntimeMetrics(p.proposers, args.role)
    state = ServeState(
        model_id=args.served_model_name or p.target_dir.name,
        admin=tokens,
        metrics=metrics,
        max_body_bytes=args.max_body_bytes,
        max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=args.default_max_tokens,
    )
    server: uvicorn.Server | None = None

    def load_or_fail() -> None:
        try:
            load(p, state)
        except Exception as exc:  # noqa: BLE001 - reported, then the process exits 2
            state.status, state.message = "failed", str(exc)
            log.error("event=load_failed error=%r", exc)
            if server is not None:
                server.should_exit = True

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threading.Thread(target=load_or_fail, name="adaspec-loader", daemon=True).start()
        yield
        if state.status == "ok":
            state.status = "draining"
        if state.scheduler is not None:
            state.scheduler.close(timeout=5.0)
        if state.revisions is not None:
            state.revisions.close()
        if state.capture is not None:
            state.capture.close()

    config = uvicorn.Config(
        build_app(state, lifespan=lifespan),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(max(1, args.shutdown_grace)),
        lifespan="on",
    )
    server = _server_class()(config, state)
    start_http_server(args.metrics_port, addr=args.host, registry=metrics.registry)
    log.info(
        "event=listening api=http://%s:%d metrics=http://%s:%d/metrics",
        args.host,
        args.port,
        args.host,
        args.metrics_port,
    )
    # uvicorn re-raises the signal it caught after its graceful shutdown; with this handler in place
    # that is a no-op, so a drained SIGTERM exits 0 (Kubernetes reads anything else as a crash).
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()
    if state.status == "failed":
        raise CommandError(f"cannot serve: {state.message}")
    log.info("event=stopped")
    return 0
