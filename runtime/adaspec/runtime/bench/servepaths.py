"""The two paths `bench serve` drives: the engine in-process behind serve's scheduler, and serve over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

SERVED_NAME = "adaspec-bench"  # --served-model-name of both paths
READY_TIMEOUT_S = 900.0  # serve loads, tunes kernels and calibrates before /health answers 200
REQUEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Trace:
    """One request as its client saw it; times are `time.perf_counter()` seconds."""

    index: int  # the prompt's position in the run's prompt list
    sent: float  # just before the request was submitted (engine) or sent (HTTP)
    first_text: float | None  # arrival of the first delta or chunk with text
    arrivals: tuple[tuple[float, int], ...]  # (arrival, tokens) of every delta or chunk carrying tokens
    tokens: int  # generated tokens (the Outcome's ids; HTTP: usage.completion_tokens)
    token_ids: tuple[int, ...]  # [tokens] generated ids, for the output comparison
    error: str | None = None


class BenchPath(Protocol):
    """A way of sending one request and timing what comes back."""

    name: str

    def request(self, index: int, prompt_ids: Sequence[int], max_tokens: int) -> Trace: ...

    def pids(self) -> tuple[int, ...]: ...

    def close(self) -> int: ...


def serve_parser() -> argparse.ArgumentParser:
    """`adaspec serve`'s own parser: the in-process path parses the very flags the subprocess gets."""
    from adaspec.runtime.server.cli import add_serve_parser

    parser = argparse.ArgumentParser(prog="adaspec")
    return add_serve_parser(parser.add_subparsers())


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def failed(index: int, sent: float, exc: BaseException) -> Trace:
    """Return the trace of a request that raised (counted as an error of its row)."""
    return Trace(index, sent, None, (), 0, (), f"{type(exc).__name__}: {exc}")


class EngineInProcess:
    """serve's own loader (`server.main.load`) in this process: the real engine and `FifoScheduler`.

    Requests are `Job`s submitted from one asyncio loop, whose events are read there as app.py reads
    them, so this path measures everything but HTTP (parsing, SSE, the client).
    """

    name = "engine"

    def __init__(self, serve_argv: Sequence[str]) -> None:
        from adaspec.runtime.server.app import ServeState
        from adaspec.runtime.server.main import admin_tokens, load, plan
        from adaspec.runtime.server.metrics import RuntimeMetrics

        args = serve_parser().parse_args(list(serve_argv))
        p = plan(args)
        self.state = ServeState(
            model_id=SERVED_NAME,
            admin=admin_tokens(args),
            metrics=RuntimeMetrics(p.proposers, args.role),
            max_body_bytes=args.max_body_bytes,
            max_tokens_limit=args.max_tokens_limit,
            default_max_tokens=args.default_max_tokens,
        )
        load(p, self.state)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self._thread.start()

    def request(self, index: int, prompt_ids: Sequence[int], max_tokens: int) -> Trace:
        """Submit one greedy request as a Job and time its events (on the loop)."""
        future = asyncio.run_coroutine_threadsafe(self._one(index, tuple(prompt_ids), max_tokens), self.loop)
        return future.result(timeout=REQUEST_TIMEOUT_S)

    async def _one(self, index: int, prompt_ids: tuple[int, ...], max_tokens: int) -> Trace:
        from adaspec.runtime.sampling import SamplingParams
        from adaspec.runtime.server.scheduler import Delta, Failed, GenerationRequest, Job

        # What app.py builds for temperature 0 and no seed, stop or tag.
        req = GenerationRequest(prompt_ids, max_tokens, SamplingParams(temperature=0.0))
        sent = time.perf_counter()
        try:
            job = Job(req, asyncio.get_running_loop())
            assert self.state.scheduler is not None  # set by load()
            self.state.scheduler.submit(job)
            first: float | None = None
            arrivals: list[tuple[float, int]] = []
            while True:
                event = await job.events.get()
                now = time.perf_counter()
                if isinstance(event, Delta):
                    if event.token_ids:
                        arrivals.append((now, len(event.token_ids)))
                    if event.text and first is None:
                        first = now
                elif isinstance(event, Failed):
                    raise RuntimeError(event.message)
                else:
                    ids = tuple(event.token_ids)
                    return Trace(index, sent, first, tuple(arrivals), len(ids), ids)
        except Exception as exc:  # noqa: BLE001 - counted as an error of the row
            return failed(index, sent, exc)

    def pids(self) -> tuple[int, ...]:
        """This process (its engine worker and trainer threads)."""
        return (os.getpid(),)

    def close(self) -> int:
        """Stop the scheduler, the trainer and the loop; return 0."""
        if self.state.scheduler is not None:
            self.state.scheduler.close(timeout=5.0)
        if self.state.revisions is not None:
            self.state.revisions.close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5.0)
        self.loop.close()
        return 0


class HttpServe:
    """A real `adaspec serve` subprocess on free loopback ports, driven with the `openai` package."""

    name = "http"

    def __init__(self, serve_argv: Sequence[str], log: Path) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [
            sys.executable,
            "-m",
            "adaspec.cli.main",
            "serve",
            f"--port={self.port}",
            f"--metrics-port={self.metrics_port}",
            *serve_argv,
        ]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        self._local = threading.local()
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        from adaspec.runtime.server.probe import wait_healthy

        wait_healthy(self.url, self.proc, self.log, "adaspec serve", READY_TIMEOUT_S)

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            import openai

            client = openai.OpenAI(
                base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=REQUEST_TIMEOUT_S
            )
            self._local.client = client
        return client

    def request(self, index: int, prompt_ids: Sequence[int], max_tokens: int) -> Trace:
        """Stream one greedy completion of the token ids and time its chunks."""
        client = self._client()
        sent = time.perf_counter()
        try:
            stream = client.completions.create(
                model=SERVED_NAME,
                prompt=list(prompt_ids),
                max_tokens=max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"return_token_ids": True},
            )
            first: float | None = None
            arrivals: list[tuple[float, int]] = []
            ids: list[int] = []
            usage: int | None = None
            for chunk in stream:
                now = time.perf_counter()
                if chunk.usage is not None:
                    usage = int(chunk.usage.completion_tokens)
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                got = [int(t) for t in (choice.model_extra or {}).get("token_ids") or ()]
                if got:
                    arrivals.append((now, len(got)))
                    ids.extend(got)
                if choice.text and first is None:
                    first = now
            if usage is None:
                raise RuntimeError("the stream ended without a usage chunk (stream_options.include_usage)")
            return Trace(index, sent, first, tuple(arrivals), usage, tuple(ids))
        except Exception as exc:  # noqa: BLE001 - counted as an error of the row
            return failed(index, sent, exc)

    def pids(self) -> tuple[int, ...]:
        """The serve process."""
        return (self.proc.pid,)

    def close(self) -> int:
        """SIGTERM serve and wait for it (kill after 60 s); return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc; None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(
    pids: Sequence[int], *, cores: float = 0.1, window: float = 0.3, timeout: float = 30.0
) -> float:
    """Wait until the processes together use under `cores` CPUs over `window` s; return seconds waited.

    Between rows the adaptive draft may still be training in the background (either process); a row
    starts only once both are quiet, so engine and HTTP rows never share the CPU.
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = [cpu_seconds(p) for p in pids]
        time.sleep(window)
        after = [cpu_seconds(p) for p in pids]
        if any(b is None or a is None for a, b in zip(after, before, strict=True)):
            break  # no /proc here: the sleep was the best we can do
        used = sum(a - b for a, b in zip(after, before, strict=True) if a is not None and b is not None)
        if used / window < cores:
            break
    return time.monotonic() - start
