"""The scheduler seam between the HTTP front and the engine: bounded admission, order of arrival.

`FifoScheduler` serves one sequence at a time in a worker thread (the engine decodes one request);
a batching scheduler can replace it behind the same `Scheduler` interface. Work that must not overlap
a request (swapping a draft revision) runs on the same thread between requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from adaspec.runtime.engine import SpeculativeEngine, Step
from adaspec.runtime.sampling import SamplingParams
from adaspec.runtime.server.textstream import TextStream
from adaspec.runtime.stats import GenerationStats

log = logging.getLogger("adaspec.serve")
T = TypeVar("T")


class QueueFull(Exception):
    """The bounded queue is full (the API answers 429)."""


class NotAccepting(Exception):
    """The scheduler is draining or closed (the API answers 503)."""


@dataclass(frozen=True)
class GenerationRequest:
    """One validated request for the engine."""

    prompt_ids: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams
    stop: tuple[str, ...] = ()
    tag: str | None = None


@dataclass(frozen=True)
class Delta:
    """Text (and the ids behind it) a stream may send now."""

    text: str
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Outcome:
    """A finished request."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (end-of-sequence or a stop string), "length" or "cancelled"
    prompt_tokens: int
    stats: GenerationStats
    queue_seconds: float
    first_token_seconds: float | None  # from arrival
    seconds: float  # from arrival to the end
    steps: tuple[Step, ...] = ()  # the engine's verifications (traffic capture records them)


@dataclass(frozen=True)
class Failed:
    """The engine raised; the request fails with this message."""

    message: str


Event = Delta | Outcome | Failed


class RequestObserver(Protocol):
    """Receives timings as requests run (the Prometheus exporter implements it)."""

    def on_started(self, queue_seconds: float) -> None: ...

    def on_step(self, num_tokens: int, seconds: float, first: bool) -> None: ...

    def on_finished(self, outcome: Outcome) -> None: ...


@dataclass
class Job:
    """A request in flight: events flow to the asyncio side through `events`."""

    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    arrived: float = field(default_factory=time.monotonic)

    def cancel(self) -> None:
        """Stop this request at its next step (or before it starts)."""
        self.cancelled.set()

    def emit(self, event: Event) -> None:
        """Hand an event to the asyncio side (thread-safe; dropped if the loop has gone)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the event loop is closed: nobody listens any more
            self.cancel()


class Scheduler(Protocol):
    """What the HTTP front needs of whoever runs the engine."""

    @property
    def waiting(self) -> int: ...

    @property
    def running(self) -> int: ...

    def submit(self, job: Job) -> None: ...

    def between_requests(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]: ...

    def drain(self) -> None: ...

    def close(self, timeout: float) -> None: ...


class FifoScheduler:
    """One worker thread, one sequence at a time, in order of arrival, at most `max_queue` waiting."""

    def __init__(
        self,
        engine: SpeculativeEngine,
        tokenizer: Any,
        observer: RequestObserver,
        max_queue: int,
        on_finished: Callable[[Job, Outcome], None] | None = None,
    ) -> None:
        self.engine = engine
        self._on_finished = on_finished  # after each served request, on the engine's thread
        self._tok = tokenizer
        self._observer = observer
        self._max_queue = max_queue
        self._jobs: deque[Job] = deque()
        self._controls: deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._accepting = True
        self._closed = False
        self._running = 0
        self._thread = threading.Thread(target=self._loop, name="adaspec-engine", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Requests admitted and not started."""
        return len(self._jobs)

    @property
    def running(self) -> int:
        """Requests the engine is decoding (0 or 1 here)."""
        return self._running

    def submit(self, job: Job) -> None:
        """Admit a request; QueueFull when `max_queue` already wait, NotAccepting when draining."""
        with self._cond:
            if not self._accepting:
                raise NotAccepting("the server is shutting down")
            if len(self._jobs) >= self._max_queue:
                raise QueueFull(f"{len(self._jobs)} requests are waiting (--max-queue {self._max_queue})")
            self._jobs.append(job)
            self._cond.notify()

    def between_requests(self, fn: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run `fn` on the engine's thread before the next request starts; return its future."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cond:
            if self._closed:
                future.set_exception(NotAccepting("the server is shutting down"))
                return future
            self._controls.append((fn, future))
            self._cond.notify()
        return future

    def drain(self) -> None:
        """Stop admitting requests; those admitted still run."""
        with self._cond:
            self._accepting = False

    def close(self, timeout: float) -> None:
        """Cancel what is left and stop the worker (waits up to `timeout` s for the running request)."""
        with self._cond:
            self._accepting = False
            self._closed = True
            for job in self._jobs:
                job.cancel()
            self._cond.notify_all()
        self._thread.join(timeout=timeout)

    # -- the worker ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._controls and not self._jobs and not self._closed:
                    self._cond.wait()
                if self._controls:
                    fn, future = self._controls.popleft()
                    job = None
                elif self._jobs:
                    job = self._jobs.popleft()
                    self._running = 1
                else:
                    return  # closed and nothing left
            if job is None:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller
                        future.set_exception(exc)
                continue
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._running = 0

    def _run(self, job: Job) -> None:
        req = job.request
        started = time.monotonic()
        if job.cancelled.is_set():  # its client went away while it waited
            outcome = self._outcome(job, TextStream(self._tok), "cancelled", GenerationStats(), started, None)
            self._observer.on_finished(outcome)
            job.emit(outcome)
            return
        self._observer.on_started(started - job.arrived)
        text = TextStream(self._tok, req.stop)
        clock = {"last": started, "first": None}

        def on_tokens(ids: Sequence[int]) -> bool:
            now = time.monotonic()
            first = clock["first"] is None
            if first:
                clock["first"] = now
            self._observer.on_step(len(ids), now - float(clock["last"] or now), first)
            clock["last"] = now
            delta = text.push(ids)
            job.emit(Delta(delta, tuple(int(i) for i in ids)))
            return text.stopped or job.cancelled.is_set()

        try:
            result = self.engine.generate(
                list(req.prompt_ids), req.max_tokens, req.sampling, tag=req.tag, on_tokens=on_tokens
            )
        except Exception as exc:  # noqa: BLE001 - the request fails, the server keeps serving
            log.exception("event=generation_failed error=%r", exc)
            job.emit(Failed(f"generation failed: {exc}"))
            return
        reason = result.finish_reason
        if text.stopped:
            reason = "stop"
        elif reason == "cancelled" and not job.cancelled.is_set():
            reason = "stop"
        first_at = clock["first"]
        first_s = None if first_at is None else float(first_at) - job.arrived
        tail = text.finish()
        if tail:
            job.emit(Delta(tail, ()))
        outcome = self._outcome(job, text, reason, result.stats, started, first_s, result.token_ids)
        outcome = replace(outcome, steps=result.steps)
        self._observer.on_finished(outcome)
        job.emit(outcome)
        if self._on_finished is not None:
            try:
                self._on_finished(job, outcome)
            except Exception as exc:  # noqa: BLE001 - a hook (capture) must never break serving
                log.error("event=on_finished_failed error=%r", exc)

    @staticmethod
    def _outcome(
        job: Job,
        text: TextStream,
        reason: str,
        stats: GenerationStats,
        started: float,
        first_s: float | None,
        token_ids: list[int] | None = None,
    ) -> Outcome:
        return Outcome(
            text=text.text,
            token_ids=list(token_ids or []),
            finish_reason=reason,
            prompt_tokens=len(job.request.prompt_ids),
            stats=stats,
            queue_seconds=started - job.arrived,
            first_token_seconds=first_s,
            seconds=time.monotonic() - job.arrived,
        )
