"""Simulated runtime pods served over real HTTP: exposition pages with the contract's metric names,
and the admin load endpoint the local actuator POSTs to (bearer token; `/refuse` answers as the runtime
does when it refuses a revision)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# acceptance rate of (revision, role, minute)
RateFn = Callable[[str, str, int], float]
LOAD_TOKEN = "fleet-load-token-0123456789"
REFUSAL = {"error": {"message": "manifest sha256 mismatch", "type": "checksum_mismatch", "param": "sha256"}}


@dataclass
class Pod:
    """One runtime pod's counters (cumulative) and what it serves."""

    revision: str | None
    role: str
    drafts: float = 0.0
    draft_tokens: float = 0.0
    accepted: float = 0.0
    generated: float = 0.0
    passes: float = 0.0
    per_pos: list[float] = field(default_factory=lambda: [0.0] * 4)
    down: bool = False
    vllm: bool = False

    def advance(self, rate: float, drafts: float = 1000.0, k: int = 4) -> None:
        if self.revision is None:
            return
        accepted = rate * drafts * k
        self.drafts += drafts
        self.draft_tokens += drafts * k
        self.accepted += accepted
        self.generated += accepted + drafts
        self.passes += drafts
        left = accepted
        for i in range(k):  # positions fill front to back
            take = min(left, drafts)
            self.per_pos[i] += take
            left -= take

    def restart(self) -> None:
        """A pod restart: every counter starts again at zero."""
        self.drafts = self.draft_tokens = self.accepted = self.generated = self.passes = 0.0
        self.per_pos = [0.0] * len(self.per_pos)

    def page(self) -> str:
        if self.vllm:
            lines = [
                "# TYPE vllm:spec_decode_num_drafts_total counter",
                f'vllm:spec_decode_num_drafts_total{{model_name="m"}} {self.drafts}',
                f'vllm:spec_decode_num_draft_tokens_total{{model_name="m"}} {self.draft_tokens}',
                f'vllm:spec_decode_num_accepted_tokens_total{{model_name="m"}} {self.accepted}',
            ]
            lines += [
                f'vllm:spec_decode_num_accepted_tokens_per_pos_total{{model_name="m",position="{i}"}} {v}'
                for i, v in enumerate(self.per_pos)
            ]
            return "\n".join(lines) + "\n"
        # two proposers share the counts, as the runtime's speculator label splits them
        lines = [
            "# HELP adaspec_spec_decode_num_drafts_total Drafts.",
            "# TYPE adaspec_spec_decode_num_drafts_total counter",
        ]
        for name, value in [
            ("adaspec_spec_decode_num_drafts_total", self.drafts),
            ("adaspec_spec_decode_num_draft_tokens_total", self.draft_tokens),
            ("adaspec_spec_decode_num_accepted_tokens_total", self.accepted),
        ]:
            lines.append(f'{name}{{speculator="static"}} {value * 0.25}')
            lines.append(f'{name}{{speculator="adaptive"}} {value * 0.75}')
        for i, v in enumerate(self.per_pos):
            name = "adaspec_spec_decode_num_accepted_tokens_per_pos_total"
            lines.append(f'{name}{{speculator="adaptive",position="{i}"}} {v}')
        lines.append(f"adaspec_generation_tokens_total {self.generated}")
        lines.append(f"adaspec_target_forward_passes_total {self.passes}")
        if self.revision is not None:
            lines.append("# TYPE adaspec_revision_info gauge")
            lines.append(f'adaspec_revision_info{{revision="{self.revision}",role="{self.role}"}} 1')
        return "\n".join(lines) + "\n"


class Fleet:
    """A stable pod and a canary pod of one speculator, plus the runtime's load endpoint."""

    def __init__(self, rate: RateFn, initial: str = "r0") -> None:
        self.rate = rate
        self.pods = {"stable": Pod(initial, "stable"), "canary": Pod(None, "canary")}
        self.loads: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, role: str) -> str:
        return f"{self.base}/{role}/metrics"

    def advance(self, minute: int) -> None:
        with self.lock:
            for pod in self.pods.values():
                if pod.revision is not None:
                    pod.advance(self.rate(pod.revision, pod.role, minute))

    def load(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.loads.append(body)
            action, revision = body["action"], body["revision"]
            if action == "start_canary":
                self.pods["canary"].revision = revision
            elif action in ("promote", "rollback"):
                self.pods["stable"].revision = revision
                self.pods["canary"].revision = None
            elif action == "abort_canary":
                self.pods["canary"].revision = None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fleet = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                role = self.path.strip("/").split("/")[0]
                pod = fleet.pods.get(role)
                if pod is None or pod.down:
                    self.send_error(503 if pod else 404)
                    return
                with fleet.lock:
                    body = pod.page().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def answer(self, code: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                if self.headers.get("Authorization") != f"Bearer {LOAD_TOKEN}":
                    self.answer(401, {"error": {"message": "missing or wrong token", "type": "auth"}})
                elif self.path == "/refuse":
                    self.answer(409, REFUSAL)
                elif self.path != "/load":
                    self.send_error(404)
                else:
                    fleet.load(body)
                    self.answer(200, {"revision": body["revision"], "sha256": body["sha256"], "version": 1})

        return Handler
