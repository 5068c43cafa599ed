"""FifoScheduler with a fake engine: bounded admission, order of arrival, controls between jobs, cancel."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from adaspec.runtime.engine import GenerationResult
from adaspec.runtime.sampling import SamplingParams
from adaspec.runtime.server.scheduler import (
    Delta,
    Event,
    Failed,
    FifoScheduler,
    GenerationRequest,
    Job,
    NotAccepting,
    Outcome,
    QueueFull,
)
from adaspec.runtime.stats import GenerationStats

WAIT = 10.0  # seconds any wait in these tests may take before it counts as a hang


class FakeEngine:
    """Commits `per_step` ids per step through on_tokens; each step waits for `gate` (open by default)."""

    def __init__(self, per_step: int = 2) -> None:
        self.per_step = per_step
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Semaphore(0)  # released when a generate call begins
        self.log: list[str] = []  # what ran on the engine's thread, in order
        self.steps: dict[int, int] = {}  # prompt's first id -> on_tokens calls made
        self.fail_on: set[int] = set()

    def generate(
        self,
        prompt_ids: Sequence[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        tag: str | None = None,
        on_tokens: Callable[[Sequence[int]], bool] | None = None,
    ) -> GenerationResult:
        key = int(prompt_ids[0])
        self.log.append(f"job{key}")
        self.steps[key] = 0
        self.started.release()
        if key in self.fail_on:
            raise RuntimeError(f"engine broke on {key}")
        out: list[int] = []
        while len(out) < max_new_tokens:
            if not self.gate.wait(WAIT):
                raise TimeoutError("the test never opened the gate")
            ids = [(key + len(out) + i) % 26 for i in range(min(self.per_step, max_new_tokens - len(out)))]
            out += ids
            self.steps[key] += 1
            if on_tokens is not None and on_tokens(ids):
                return GenerationResult(out, "cancelled", GenerationStats(generated_tokens=len(out)))
        return GenerationResult(out, "length", GenerationStats(generated_tokens=len(out)))

    def wait_started(self) -> None:
        assert self.started.acquire(timeout=WAIT), "the engine never started a request"


class LetterTokenizer:
    """Id i decodes to the i-th lowercase letter."""

    def decode(self, ids: Sequence[int], **_: Any) -> str:
        return "".join(chr(ord("a") + int(i)) for i in ids)


class Observer:
    """Records what the scheduler reports."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.steps: list[tuple[int, bool]] = []
        self.finished: list[Outcome] = []

    def on_started(self, queue_seconds: float) -> None:
        self.started.append(queue_seconds)

    def on_step(self, num_tokens: int, seconds: float, first: bool) -> None:
        self.steps.append((num_tokens, first))

    def on_finished(self, outcome: Outcome) -> None:
        self.finished.append(outcome)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def observer() -> Observer:
    return Observer()


@pytest.fixture
def make(engine: FakeEngine, observer: Observer) -> Iterator[Callable[[int], FifoScheduler]]:
    made: list[FifoScheduler] = []

    def build(max_queue: int) -> FifoScheduler:
        s = FifoScheduler(engine, LetterTokenizer(), observer, max_queue)  # type: ignore[arg-type]
        made.append(s)
        return s

    yield build
    engine.gate.set()
    for s in made:
        s.close(timeout=WAIT)


def job(loop: asyncio.AbstractEventLoop, key: int, max_tokens: int = 6, stop: tuple[str, ...] = ()) -> Job:
    return Job(GenerationRequest((key, 1, 2), max_tokens, SamplingParams(), stop), loop)


def collect(loop: asyncio.AbstractEventLoop, j: Job) -> tuple[list[Delta], Outcome | Failed]:
    """Run the loop until the job's last event; return its deltas and the last event."""

    async def run() -> tuple[list[Delta], Outcome | Failed]:
        deltas: list[Delta] = []
        while True:
            event: Event = await asyncio.wait_for(j.events.get(), WAIT)
            if isinstance(event, Delta):
                deltas.append(event)
            else:
                return deltas, event

    return loop.run_until_complete(run())


def outcome(loop: asyncio.AbstractEventLoop, j: Job) -> Outcome:
    last = collect(loop, j)[1]
    assert isinstance(last, Outcome), last
    return last


def test_a_request_streams_deltas_and_finishes(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], observer: Observer
) -> None:
    s = make(4)
    j = job(loop, 0, max_tokens=5)
    s.submit(j)
    deltas, last = collect(loop, j)
    assert isinstance(last, Outcome)
    assert last.finish_reason == "length"
    assert last.token_ids == [0, 1, 2, 3, 4]
    assert last.text == "abcde" == "".join(d.text for d in deltas)
    assert [d.token_ids for d in deltas if d.token_ids] == [(0, 1), (2, 3), (4,)]
    assert last.prompt_tokens == 3
    assert observer.finished == [last]
    assert [first for _, first in observer.steps] == [True, False, False]


def test_queue_full_when_max_queue_are_waiting(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(2)
    engine.gate.clear()
    running = job(loop, 0)
    s.submit(running)
    engine.wait_started()  # the first one left the queue
    waiting = [job(loop, 1), job(loop, 2)]
    for j in waiting:
        s.submit(j)
    assert (s.waiting, s.running) == (2, 1)
    with pytest.raises(QueueFull, match=r"2 requests are waiting \(--max-queue 2\)"):
        s.submit(job(loop, 3))
    engine.gate.set()
    for j in [running, *waiting]:
        assert outcome(loop, j).finish_reason == "length"
    # the worker delivers a job's outcome, then marks itself idle: give it that moment
    deadline = time.monotonic() + WAIT
    while (s.waiting, s.running) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (s.waiting, s.running) == (0, 0)
    s.submit(job(loop, 4))  # room again


def test_order_of_arrival(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(16)
    engine.gate.clear()
    jobs = [job(loop, 7)]
    s.submit(jobs[0])
    engine.wait_started()
    for key in (3, 9, 1, 5, 0):
        jobs.append(job(loop, key))
        s.submit(jobs[-1])
    engine.gate.set()
    for j in jobs:
        outcome(loop, j)
    assert engine.log == ["job7", "job3", "job9", "job1", "job5", "job0"]


def test_between_requests_runs_between_jobs(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(4)
    engine.gate.clear()
    first, second = job(loop, 1), job(loop, 2)
    s.submit(first)
    engine.wait_started()
    s.submit(second)

    def control() -> str:
        engine.log.append("control")
        return "swapped"

    future = s.between_requests(control)
    assert not future.done()  # never in the middle of a request
    engine.gate.set()
    outcome(loop, first)
    outcome(loop, second)
    assert future.result(timeout=WAIT) == "swapped"
    # before the next waiting request, not after the queue empties
    assert engine.log == ["job1", "control", "job2"]


def test_between_requests_hands_back_the_exception(make: Callable[[int], FifoScheduler]) -> None:
    s = make(4)

    def broken() -> None:
        raise ValueError("bad revision")

    with pytest.raises(ValueError, match="bad revision"):
        s.between_requests(broken).result(timeout=WAIT)
    assert s.between_requests(lambda: 3).result(timeout=WAIT) == 3  # the worker lives on


def test_cancelled_job_stops_the_engine_at_its_next_step(
    loop: asyncio.AbstractEventLoop,
    make: Callable[[int], FifoScheduler],
    engine: FakeEngine,
    observer: Observer,
) -> None:
    s = make(4)
    engine.gate.clear()
    j = job(loop, 0, max_tokens=20)
    s.submit(j)
    engine.wait_started()
    j.cancel()
    engine.gate.set()
    last = outcome(loop, j)
    assert last.finish_reason == "cancelled"
    assert engine.steps[0] == 1  # stopped at the first on_tokens after cancel, not after 10 steps
    assert observer.finished == [last]  # a cancelled request is counted (finished_reason="cancelled")
    after = job(loop, 1)
    s.submit(after)
    assert outcome(loop, after).finish_reason == "length"


def test_job_cancelled_while_waiting_never_reaches_the_engine(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(4)
    engine.gate.clear()
    first, second = job(loop, 1), job(loop, 2)
    s.submit(first)
    engine.wait_started()
    s.submit(second)
    second.cancel()
    engine.gate.set()
    assert outcome(loop, first).finish_reason == "length"
    assert outcome(loop, second).finish_reason == "cancelled"
    assert engine.log == ["job1"]


def test_stop_string_ends_the_request_with_finish_reason_stop(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(4)
    j = job(loop, 0, max_tokens=20, stop=("de",))
    s.submit(j)
    deltas, last = collect(loop, j)
    assert isinstance(last, Outcome)
    assert last.finish_reason == "stop"
    assert last.text == "abc" == "".join(d.text for d in deltas)
    assert engine.steps[0] == 3  # "ab", "cd", "ef": stopped as soon as "de" appeared


def test_engine_failure_fails_the_request_and_the_worker_serves_on(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(4)
    engine.fail_on.add(5)
    broken, fine = job(loop, 5), job(loop, 6)
    s.submit(broken)
    s.submit(fine)
    last = collect(loop, broken)[1]
    assert isinstance(last, Failed) and "engine broke on 5" in last.message
    assert outcome(loop, fine).finish_reason == "length"


def test_close_cancels_waiting_jobs(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(4)
    engine.gate.clear()
    running = job(loop, 0)
    s.submit(running)
    engine.wait_started()
    waiting = [job(loop, 1), job(loop, 2)]
    for j in waiting:
        s.submit(j)
    closer = threading.Thread(target=s.close, args=(WAIT,))
    closer.start()
    while not all(j.cancelled.is_set() for j in waiting):
        closer.join(0.01)
    engine.gate.set()
    closer.join(WAIT)
    assert not closer.is_alive()  # the worker stopped
    assert outcome(loop, running).finish_reason == "length"  # the running request is let finish
    assert [outcome(loop, j).finish_reason for j in waiting] == ["cancelled", "cancelled"]
    assert engine.log == ["job0"]
    with pytest.raises(NotAccepting):
        s.submit(job(loop, 3))
    with pytest.raises(NotAccepting):
        s.between_requests(lambda: None).result(timeout=WAIT)


def test_not_accepting_after_drain_while_admitted_jobs_still_run(
    loop: asyncio.AbstractEventLoop, make: Callable[[int], FifoScheduler], engine: FakeEngine
) -> None:
    s = make(4)
    engine.gate.clear()
    admitted = [job(loop, 0), job(loop, 1)]
    for j in admitted:
        s.submit(j)
    engine.wait_started()
    s.drain()
    with pytest.raises(NotAccepting, match="shutting down"):
        s.submit(job(loop, 2))
    engine.gate.set()
    assert [outcome(loop, j).finish_reason for j in admitted] == ["length", "length"]
    assert s.between_requests(lambda: "still runs").result(timeout=WAIT) == "still runs"


def test_emit_after_the_loop_closed_cancels_the_job(engine: FakeEngine) -> None:
    gone = asyncio.new_event_loop()
    j = job(gone, 0)
    gone.close()
    j.emit(Delta("x", (1,)))
    assert j.cancelled.is_set()
