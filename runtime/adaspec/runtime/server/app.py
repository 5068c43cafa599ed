"""The HTTP front of `adaspec serve`: OpenAI-compatible API, health, admin API (Starlette)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from adaspec.runtime.capture import CaptureSink
from adaspec.runtime.sampling import SamplingParams
from adaspec.runtime.server.metrics import RuntimeMetrics
from adaspec.runtime.server.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    check_unsupported,
    validation_error,
)
from adaspec.runtime.server.revisions import RevisionManager
from adaspec.runtime.server.scheduler import (
    Delta,
    Event,
    Failed,
    GenerationRequest,
    Job,
    NotAccepting,
    Outcome,
    QueueFull,
    Scheduler,
)
from adaspec.runtime.server.tokens import STATIC, AdminTokens

MAX_STOP_STRINGS = 4  # OpenAI's limit


@dataclass
class ServeState:
    """What the handlers share; filled in by the loader once the models are ready."""

    model_id: str
    admin: AdminTokens
    metrics: RuntimeMetrics
    max_body_bytes: int
    max_tokens_limit: int
    default_max_tokens: int
    status: Literal["loading", "ok", "draining", "failed"] = "loading"
    message: str = ""
    tokenizer: Any = None
    scheduler: Scheduler | None = None
    revisions: RevisionManager | None = None
    capture: CaptureSink | None = None
    max_positions: int = 0
    vocab_size: int = 0
    created: int = field(default_factory=lambda: int(time.time()))
    load_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LoadBody(BaseModel):
    """`POST /admin/v1/revisions/load` (docs/CONTRACTS.md)."""

    model_config = ConfigDict(extra="forbid")
    revision: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    artifact_uri: str | None = Field(default=None, max_length=4096)
    sha256: str | None = Field(default=None, pattern=r"^([a-fA-F0-9]{64})?$")
    role: Literal["stable", "canary"] | None = None
    action: str | None = Field(default=None, max_length=64)
    speculator: str | None = Field(default=None, max_length=253)


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise APIError(
            413, f"request body of {declared} bytes is over the limit of {limit}", kind="too_large"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body is over the limit of {limit} bytes", kind="too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _ready(state: ServeState) -> Scheduler:
    if state.status != "ok" or state.scheduler is None:
        what = {"loading": "loading the models", "draining": "shutting down"}.get(state.status, state.status)
        raise APIError(
            503, f"the server is not ready: {what}", kind="service_unavailable", headers={"Retry-After": "5"}
        )
    return state.scheduler


class App:
    """Request handlers bound to one ServeState."""

    def __init__(self, state: ServeState) -> None:
        self.state = state

    # -- health and models -------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        s = self.state
        body = {"status": s.status, **({"message": s.message} if s.message else {})}
        return JSONResponse(body, status_code=200 if s.status == "ok" else 503)

    async def models(self, request: Request) -> Response:
        s = self.state
        model = {"id": s.model_id, "object": "model", "created": s.created, "owned_by": "adaspec"}
        if s.max_positions:
            model["max_model_len"] = s.max_positions
        return JSONResponse({"object": "list", "data": [model]})

    # -- generation ----------------------------------------------------------------------------
    def _prepare(self, body: CompletionRequest | ChatRequest, prompt_ids: list[int]) -> GenerationRequest:
        s = self.state
        if body.model is not None and body.model != s.model_id:
            raise APIError(
                404,
                f"model {body.model!r} does not exist; served: {s.model_id!r}",
                "model",
                kind="not_found_error",
            )
        check_unsupported(body)
        if not prompt_ids:
            raise APIError(400, "the prompt is empty: at least one token is needed", "prompt")
        if any(not 0 <= t < s.vocab_size for t in prompt_ids):
            raise APIError(400, f"prompt token ids must be in [0, {s.vocab_size})", "prompt")
        param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        room = s.max_positions - len(prompt_ids)
        if max_tokens is None:
            if room <= 0:
                raise APIError(
                    400,
                    f"the prompt ({len(prompt_ids)} tokens) fills the model's {s.max_positions} positions",
                    "prompt",
                )
            max_tokens = min(s.default_max_tokens, room)
        if max_tokens <= 0:
            raise APIError(400, f"{param} must be > 0, got {max_tokens}", param)
        if max_tokens > s.max_tokens_limit:
            raise APIError(
                400, f"{param} must be <= {s.max_tokens_limit} (--max-tokens-limit), got {max_tokens}", param
            )
        if len(prompt_ids) + max_tokens > s.max_positions:
            raise APIError(
                400,
                f"prompt ({len(prompt_ids)} tokens) + {param} ({max_tokens}) exceeds the "
                f"model's {s.max_positions} positions",
                param,
            )
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        if len(stop) > MAX_STOP_STRINGS:
            raise APIError(400, f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}", "stop")
        top_k = body.top_k if body.top_k not in (None, -1) else 0
        try:
            sampling = SamplingParams(
                temperature=float(body.temperature if body.temperature is not None else 1.0),
                top_p=float(body.top_p if body.top_p is not None else 1.0),
                top_k=int(top_k or 0),
                seed=body.seed,
                reproducible=body.seed is not None,  # a seed names one output, whatever was drafted
            )
        except ValueError as exc:
            name = str(exc).split(" ", 1)[0]
            raise APIError(
                400, str(exc), name if name in ("temperature", "top_p", "top_k") else None
            ) from None
        return GenerationRequest(tuple(prompt_ids), max_tokens, sampling, stop, body.workload_tag)

    async def _parse(self, request: Request, model: type[CompletionRequest | ChatRequest]) -> Any:
        raw = await _read_body(request, self.state.max_body_bytes)
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise validation_error(exc) from None

    def _completion_prompt(self, body: CompletionRequest) -> list[int]:
        p = body.prompt
        if isinstance(p, list) and p and isinstance(p[0], str | list):
            if len(p) != 1:
                raise APIError(400, f"one prompt per request, got {len(p)}", "prompt")
            p = p[0]  # type: ignore[assignment]
        if isinstance(p, str):
            return list(self.state.tokenizer.encode(p, add_special_tokens=False))
        return [int(t) for t in p]  # type: ignore[arg-type]

    def _chat_prompt(self, body: ChatRequest) -> list[int]:
        tok = self.state.tokenizer
        if not getattr(tok, "chat_template", None):
            raise APIError(
                400, f"model {self.state.model_id!r} has no chat template; use /v1/completions", "messages"
            )
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # noqa: BLE001 - a template may reject a conversation (e.g. roles)
            raise APIError(400, f"the chat template rejected the messages: {exc}", "messages") from None
        return list(tok.encode(str(text), add_special_tokens=False))

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def _generate(self, request: Request, chat: bool) -> Response:
        try:
            scheduler = _ready(self.state)
            body = await self._parse(request, ChatRequest if chat else CompletionRequest)
            ids = self._chat_prompt(body) if chat else self._completion_prompt(body)
            req = self._prepare(body, ids)
            job = Job(req, asyncio.get_running_loop())
            try:
                scheduler.submit(job)
            except QueueFull as exc:
                raise APIError(429, str(exc), kind="rate_limit_error", headers={"Retry-After": "1"}) from None
            except NotAccepting as exc:
                raise APIError(503, str(exc), kind="service_unavailable") from None
        except APIError as exc:
            return _error(exc)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        if body.stream:
            return StreamingResponse(
                self._stream(job, body, rid, chat),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await self._collect(request, job, body, rid, chat)

    async def _collect(self, request: Request, job: Job, body: Any, rid: str, chat: bool) -> Response:
        try:
            while True:
                try:
                    event = await asyncio.wait_for(job.events.get(), timeout=1.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        job.cancel()
                        return Response(status_code=499)
                    continue
                if isinstance(event, Failed):
                    return _error(APIError(500, event.message, kind="server_error"))
                if isinstance(event, Outcome):
                    return JSONResponse(self._full(event, body, rid, chat))
        finally:
            job.cancel()  # no effect once finished; stops the engine if this handler is cancelled

    def _head(self, rid: str, chat: bool, chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" if chat else "text_completion") + (".chunk" if chunk and chat else "")
        return {"id": rid, "object": kind, "created": int(time.time()), "model": self.state.model_id}

    @staticmethod
    def _usage(o: Outcome) -> dict[str, int]:
        n = len(o.token_ids)
        return {"prompt_tokens": o.prompt_tokens, "completion_tokens": n, "total_tokens": o.prompt_tokens + n}

    def _full(self, o: Outcome, body: Any, rid: str, chat: bool) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": o.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": o.text}
        else:
            choice["text"] = o.text
        if body.return_token_ids:
            choice["token_ids"] = o.token_ids
        out = {**self._head(rid, chat, False), "choices": [choice], "usage": self._usage(o)}
        if body.speculation_stats:
            out["speculation"] = o.stats.to_dict()
        return out

    def _chunk(self, rid: str, chat: bool, text: str | None, finish: str | None, **extra: Any) -> str:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        if chat:
            choice["delta"] = {} if text is None else {"content": text}
        else:
            choice["text"] = text or ""
        choice.update(extra)
        return "data: " + json.dumps({**self._head(rid, chat, True), "choices": [choice]}) + "\n\n"

    async def _stream(self, job: Job, body: Any, rid: str, chat: bool) -> AsyncIterator[str]:
        try:
            if chat:
                role = {
                    **self._head(rid, chat, True),
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
                yield "data: " + json.dumps(role) + "\n\n"
            pending: Event | None = None
            while True:
                event = pending if pending is not None else await job.events.get()
                pending = None
                if isinstance(event, Delta):
                    # steps that came while the last chunk was written go out as one chunk
                    event, pending = _coalesce(event, job.events)
                    if event.text or (body.return_token_ids and event.token_ids):
                        extra = {"token_ids": list(event.token_ids)} if body.return_token_ids else {}
                        yield self._chunk(rid, chat, event.text, None, **extra)
                elif isinstance(event, Failed):
                    yield (
                        "data: "
                        + json.dumps(APIError(500, event.message, kind="server_error").body())
                        + "\n\n"
                    )
                    break
                else:
                    yield self._chunk(rid, chat, None if chat else "", event.finish_reason)
                    opts = body.stream_options
                    if (opts is not None and opts.include_usage) or body.speculation_stats:
                        last: dict[str, Any] = {**self._head(rid, chat, True), "choices": []}
                        if opts is not None and opts.include_usage:
                            last["usage"] = self._usage(event)
                        if body.speculation_stats:
                            last["speculation"] = event.stats.to_dict()
                        yield "data: " + json.dumps(last) + "\n\n"
                    break
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()  # the client went away (or the stream ended): stop decoding for it

    # -- admin -----------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if not self.state.admin.check(request.headers.get("authorization")):
            raise APIError(
                401,
                "a valid admin bearer token is required",
                kind="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def list_revisions(self, request: Request) -> Response:
        try:
            self._authorize(request)
            _ready(self.state)
        except APIError as exc:
            return _error(exc)
        assert self.state.revisions is not None  # set before status becomes ok
        return JSONResponse(self.state.revisions.listing())

    async def load_revision(self, request: Request) -> Response:
        s = self.state
        try:
            self._authorize(request)
            scheduler = _ready(s)
            raw = await _read_body(request, s.max_body_bytes)
            try:
                body = LoadBody.model_validate_json(raw)
            except ValidationError as exc:
                raise validation_error(exc) from None
            revisions = s.revisions
            assert revisions is not None  # set before status becomes ok
            async with s.load_lock:
                try:
                    loaded = await asyncio.to_thread(
                        revisions.verify,
                        body.revision,
                        body.artifact_uri or "",
                        body.sha256 or "",
                        body.role or revisions.role,
                        body.action or "",
                    )
                except APIError:
                    s.metrics.loads.labels("refused").inc()
                    raise
                await asyncio.wrap_future(scheduler.between_requests(lambda: revisions.activate(loaded)))
            s.metrics.loads.labels("ok").inc()
            s.metrics.set_revision(loaded.record.revision, revisions.adaptive_version())
        except APIError as exc:
            return _error(exc)
        except NotAccepting as exc:
            return _error(APIError(503, str(exc), kind="service_unavailable"))
        r = loaded.record
        return JSONResponse(
            {
                "revision": r.revision,
                "sha256": r.sha256 or None,
                "role": r.role,
                "version": revisions.adaptive_version(),
                "static": r.revision == STATIC,
            }
        )


def _coalesce(first: Delta, events: asyncio.Queue[Event]) -> tuple[Delta, Event | None]:
    """Merge the Deltas already queued after `first`; return the merged one and the next other event."""
    text, ids = [first.text], list(first.token_ids)
    while not events.empty():
        nxt = events.get_nowait()
        if not isinstance(nxt, Delta):
            return Delta("".join(text), tuple(ids)), nxt
        text.append(nxt.text)
        ids.extend(nxt.token_ids)
    return Delta("".join(text), tuple(ids)), None


def build_app(state: ServeState, lifespan: Any = None) -> Starlette:
    """The ASGI app serving `state`."""
    h = App(state)
    routes = [
        Route("/health", h.health, methods=["GET"]),
        Route("/v1/models", h.models, methods=["GET"]),
        Route("/v1/completions", h.completions, methods=["POST"]),
        Route("/v1/chat/completions", h.chat, methods=["POST"]),
        Route("/admin/v1/revisions", h.list_revisions, methods=["GET"]),
        Route("/admin/v1/revisions/load", h.load_revision, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
