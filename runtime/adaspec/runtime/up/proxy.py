"""The one OpenAI endpoint of `adaspec up`: /v1/* proxied to the stable or the canary runtime.

A request goes to the canary with probability `canary_share` while the control plane has a canary
revision in service, else to the stable runtime. Bodies and streams (server-sent events) pass through as
bytes; the answer carries `x-adaspec-role` (which runtime served it).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the upstream client sets itself.
_DROP_REQUEST = {"host", "connection", "keep-alive", "transfer-encoding", "upgrade", "te", "content-length"}
_DROP_RESPONSE = {"connection", "keep-alive", "transfer-encoding", "upgrade", "te"}
ROLE_HEADER = "x-adaspec-role"


@dataclass
class Split:
    """Which runtime a request goes to: `canary_active()` is asked at most every `refresh_s` seconds."""

    canary_active: Callable[[], bool]
    share: float
    refresh_s: float = 1.0
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    _active: bool = False
    _checked: float = float("-inf")

    def choose(self) -> str:
        """Return `canary` or `stable` for the next request."""
        now = self.clock()
        if now - self._checked >= self.refresh_s:
            try:
                self._active = self.canary_active()
            except Exception:  # the store is busy or down: keep the last answer
                pass
            self._checked = now
        return "canary" if self._active and self.rng.random() < self.share else "stable"


class Proxy:
    """Forwards one request to the chosen runtime and streams its answer back."""

    def __init__(self, upstreams: Mapping[str, str], split: Split, timeout_s: float) -> None:
        self.upstreams = dict(upstreams)
        self.split = split
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0), limits=httpx.Limits(max_connections=256)
        )
        self.served: dict[str, int] = {role: 0 for role in self.upstreams}

    async def aclose(self) -> None:
        await self.client.aclose()

    async def handle(self, request: Request) -> Response:
        """Return the chosen runtime's answer to `request` (502 in OpenAI's error shape if it is down)."""
        role = self.split.choose()
        url = self.upstreams[role] + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _DROP_REQUEST]
        upstream = self.client.build_request(
            request.method, url, headers=headers, content=await request.body()
        )
        try:
            resp = await self.client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            return JSONResponse(
                {
                    "error": {
                        "message": f"the {role} runtime did not answer: {type(exc).__name__}",
                        "type": "upstream_error",
                        "param": None,
                        "code": None,
                    }
                },
                status_code=502,
                headers={ROLE_HEADER: role},
            )
        self.served[role] = self.served.get(role, 0) + 1
        out = {k: v for k, v in resp.headers.items() if k.lower() not in _DROP_RESPONSE}
        out[ROLE_HEADER] = role

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:
                await resp.aclose()

        return StreamingResponse(
            body(), status_code=resp.status_code, headers=out, background=BackgroundTask(resp.aclose)
        )
