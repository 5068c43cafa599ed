"""Captured traffic: versioned, append-only JSON-lines shards, safe to read while written, bounded on disk.

One record per line (docs/CONTRACTS.md, "Captured traffic"). A writer appends whole lines and flushes;
a reader skips a last line without its newline (a record being written, or torn by a crash) and refuses
a malformed line anywhere else, naming the shard and the line. Shards rotate by size and age; the oldest
are removed once older than the retention or when the directory holds more than its byte bound.
Records hold the prompts and outputs themselves: capture stores user text (as token ids), nothing else.
Torch-free, so the control plane and `adaspec adapt` read it without the runtime's engine.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("adaspec.capture")

FORMAT_VERSION = 1
SHARD = re.compile(r"^capture-(\d{13})-(\d+)-(\d{6})\.jsonl$")


class CaptureFormatError(ValueError):
    """A shard line that is not a record of a known version."""


@dataclass(frozen=True)
class CapturedStep:
    """One verification of a captured request: see adaspec.runtime.engine.Step."""

    speculator: str | None
    drafted: int
    accepted: int
    committed: int


@dataclass(frozen=True)
class CapturedRequest:
    """One served request as captured."""

    id: str
    time: float  # unix seconds when it finished
    revision: str
    role: str
    tag: str | None
    prompt_ids: list[int]
    output_ids: list[int]
    steps: list[CapturedStep]
    finish_reason: str
    sampling: dict[str, float] = field(default_factory=dict)  # temperature, top_p, top_k
    tokenizer_sha256: str = ""  # the serving tokenizer's fingerprint (adapt refuses traffic of another)

    def to_line(self) -> str:
        """The record as one JSON line (with its format version)."""
        body = asdict(self)
        body["steps"] = [[s.speculator, s.drafted, s.accepted, s.committed] for s in self.steps]
        return json.dumps({"v": FORMAT_VERSION, **body}, separators=(",", ":")) + "\n"

    @classmethod
    def from_line(cls, line: str) -> CapturedRequest:
        """Parse one line; CaptureFormatError saying what is wrong otherwise."""
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise CaptureFormatError(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise CaptureFormatError("a record must be a JSON object")
        version = data.pop("v", None)
        if version != FORMAT_VERSION:
            raise CaptureFormatError(f"format version {version!r} is not {FORMAT_VERSION}")
        try:
            steps = [CapturedStep(s[0], int(s[1]), int(s[2]), int(s[3])) for s in data.pop("steps")]
            rec = cls(steps=steps, **data)
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise CaptureFormatError(f"bad record: {exc}") from None
        if sum(s.committed for s in rec.steps) != len(rec.output_ids):
            raise CaptureFormatError("steps do not add up to the output's length")
        return rec

    def token_origins(self) -> list[tuple[str | None, bool]]:
        """Per output token: the speculator that drafted it (None: the target's own) and whether a
        draft token was rejected at that position (the target's token replaced it)."""
        out: list[tuple[str | None, bool]] = []
        for s in self.steps:
            out += [(s.speculator, False)] * min(s.accepted, s.committed)
            if s.committed > s.accepted:
                out.append((None, s.accepted < s.drafted))
        return out


def shard_name(start: float, pid: int, seq: int) -> str:
    """The file name of a shard opened at `start` (sorting by name sorts by time)."""
    return f"capture-{int(start * 1000):013d}-{pid}-{seq:06d}.jsonl"


def shards(directory: Path) -> list[Path]:
    """The shards in a capture directory, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if SHARD.match(p.name))


def read_records(
    directory: Path, since: float | None = None, last: int | None = None
) -> Iterator[CapturedRequest]:
    """Captured requests in time order (from `since`, or only the `last` N), from the shards of
    `directory` and of its subdirectories (one per pod); CaptureFormatError names the shard and line of a
    malformed record. A last line still being written is skipped."""
    records: list[CapturedRequest] = []
    # a directory of shards, or of per-pod directories of shards (many runtimes writing to one volume)
    paths = shards(directory) + [
        p
        for sub in (sorted(directory.iterdir()) if directory.is_dir() else [])
        if sub.is_dir()
        for p in shards(sub)
    ]
    for path in paths:
        with path.open("r", encoding="utf-8", errors="strict") as f:
            for number, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    break  # torn or still being written: never fatal
                if not line.strip():
                    continue
                try:
                    rec = CapturedRequest.from_line(line)
                except CaptureFormatError as exc:
                    raise CaptureFormatError(f"{path.name}:{number}: {exc}") from None
                if since is None or rec.time >= since:
                    records.append(rec)
    records.sort(key=lambda r: r.time)  # stable: one writer's order is kept between equal times
    if last is not None:
        records = records[-last:]
    yield from records


class ShardWriter:
    """Appends records to the current shard; rotates and evicts (not thread-safe: one writer thread)."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        retention_s: float,
        shard_bytes: int = 16 << 20,
        shard_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.retention_s = retention_s
        self.shard_bytes = min(shard_bytes, max(1, max_bytes // 4))
        self.shard_seconds = shard_seconds
        self.clock = clock
        self._file: Any = None
        self._path: Path | None = None
        self._opened = 0.0
        self._seq = 0
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def write(self, rec: CapturedRequest) -> None:
        """Append one record (whole line, flushed), rotating and evicting as needed."""
        now = self.clock()
        line = rec.to_line().encode("utf-8")
        if (
            self._file is None
            or self._file.tell() + len(line) > self.shard_bytes
            or (now - self._opened > self.shard_seconds)
        ):
            self._rotate(now)
        self._file.write(line)
        self._file.flush()
        self.evict(now)

    def _rotate(self, now: float) -> None:
        self.close()
        self._seq += 1
        self._path = self.directory / shard_name(now, os.getpid(), self._seq)
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._opened = now

    def evict(self, now: float) -> list[Path]:
        """Remove shards past the retention, then the oldest while over the byte bound; return them."""
        removed: list[Path] = []
        sized = [(p, p.stat()) for p in shards(self.directory)]
        total = sum(st.st_size for _, st in sized)
        for path, st in sized:
            if path == self._path:
                continue  # the open shard goes last, by rotation
            if now - st.st_mtime > self.retention_s or total > self.max_bytes:
                path.unlink(missing_ok=True)
                total -= st.st_size
                removed.append(path)
        return removed

    def close(self) -> None:
        """Close the open shard."""
        if self._file is not None:
            self._file.close()
            self._file = None


class CaptureSink:
    """Samples finished requests and writes them in a background thread through a bounded queue.

    The serving path only enqueues; when the queue is full a record is dropped and counted.
    """

    def __init__(
        self, writer: ShardWriter, sample_rate: float, queue_size: int = 1024, seed: int | None = None
    ):
        self.writer = writer
        self.sample_rate = sample_rate
        self.rng = random.Random(seed)
        self.dropped = 0
        self.written = 0
        self.failures = 0
        self._queue: queue.Queue[CapturedRequest | None] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="adaspec-capture", daemon=True)
        self._thread.start()

    def offer(self, rec: Callable[[], CapturedRequest]) -> bool:
        """Capture a request with probability `sample_rate` (built only if sampled); True if queued."""
        if self.sample_rate <= 0 or self.rng.random() >= self.sample_rate:
            return False
        try:
            self._queue.put_nowait(rec())
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while True:
            rec = self._queue.get()
            if rec is None:
                return
            try:
                self.writer.write(rec)
                self.written += 1
            except OSError as exc:  # a full or read-only disk must not stop serving
                self.failures += 1
                log.error("event=capture_write_failed error=%r", exc)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=timeout)
        self.writer.close()


def steps_of(steps: Sequence[Any]) -> list[CapturedStep]:
    """Captured steps from the engine's `Step`s."""
    return [CapturedStep(s.speculator, s.drafted, s.accepted, s.committed) for s in steps]
