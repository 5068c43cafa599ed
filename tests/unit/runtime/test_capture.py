"""Capture shards: one versioned record per line, torn last lines skipped, rotation and eviction."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from adaspec.runtime.capture import (
    CapturedRequest,
    CapturedStep,
    CaptureFormatError,
    CaptureSink,
    ShardWriter,
    read_records,
    shards,
)


def rec(i: int, t: float = 1000.0) -> CapturedRequest:
    steps = [CapturedStep("suffix", 3, 2, 3), CapturedStep(None, 0, 0, 1), CapturedStep("static", 2, 2, 3)]
    return CapturedRequest(
        id=f"r{i}",
        time=t + i,
        revision="static",
        role="stable",
        tag="python",
        prompt_ids=[1, 2, 3],
        output_ids=[4, 5, 6, 7, 8, 9, 10],
        steps=steps,
        finish_reason="length",
        sampling={"temperature": 0.0, "top_p": 1.0, "top_k": 0},
    )


def test_a_record_round_trips_and_says_where_each_token_came_from() -> None:
    r = rec(0)
    line = r.to_line()
    assert line.endswith("\n") and line.count("\n") == 1 and '"v":1' in line
    assert CapturedRequest.from_line(line) == r
    assert r.token_origins() == [
        ("suffix", False),
        ("suffix", False),
        (None, True),  # 2 accepted, the third drafted token rejected
        (None, False),  # no draft: the target's own token
        ("static", False),
        ("static", False),
        (None, False),  # all accepted, then the bonus token
    ]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"v": 2, "id": "x"}\n', "version 2"),
        ("[1, 2]\n", "JSON object"),
        ("{not json\n", "not JSON"),
        ('{"v": 1, "id": "x"}\n', "bad record"),
    ],
)
def test_malformed_records_are_named(line: str, words: str) -> None:
    with pytest.raises(CaptureFormatError, match=words):
        CapturedRequest.from_line(line)


def test_steps_must_add_up_to_the_output() -> None:
    line = rec(0).to_line().replace('"output_ids":[4,5,6,7,8,9,10]', '"output_ids":[4]')
    with pytest.raises(CaptureFormatError, match="add up"):
        CapturedRequest.from_line(line)


def test_a_torn_last_line_is_skipped_and_a_corrupt_middle_line_is_named(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, max_bytes=1 << 20, retention_s=3600, clock=lambda: 1000.0)
    for i in range(3):
        w.write(rec(i))
    w.close()
    (shard,) = shards(tmp_path)
    with shard.open("a") as f:
        f.write(rec(3).to_line()[:25])  # a record cut by a crash (or still being written)
    assert [r.id for r in read_records(tmp_path)] == ["r0", "r1", "r2"]
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text(lines[0] + "garbage\n" + "".join(lines[1:]))
    with pytest.raises(CaptureFormatError, match=rf"{shard.name}:2: not JSON"):
        list(read_records(tmp_path))


def test_windows_by_time_and_by_count(tmp_path: Path) -> None:
    w = ShardWriter(tmp_path, max_bytes=1 << 20, retention_s=3600, clock=lambda: 1000.0)
    for i in range(10):
        w.write(rec(i))
    w.close()
    assert [r.id for r in read_records(tmp_path, since=1007.0)] == ["r7", "r8", "r9"]
    assert [r.id for r in read_records(tmp_path, last=2)] == ["r8", "r9"]
    assert list(read_records(tmp_path / "none")) == []


def test_per_pod_directories_are_read_together_in_time_order(tmp_path: Path) -> None:
    """Runtime pods on one volume each write `capture/<pod>/`; `adapt` reads `capture/` as one window."""
    for pod, ids in (("pod-a", (0, 2, 4)), ("pod-b", (1, 3, 5))):
        w = ShardWriter(tmp_path / pod, max_bytes=1 << 20, retention_s=3600, clock=lambda: 1000.0)
        for i in ids:
            w.write(rec(i))
        w.close()
    assert [r.id for r in read_records(tmp_path)] == [f"r{i}" for i in range(6)]
    assert [r.id for r in read_records(tmp_path, last=3)] == ["r3", "r4", "r5"]
    assert [r.id for r in read_records(tmp_path / "pod-b")] == ["r1", "r3", "r5"]


def test_rotation_and_eviction_bound_the_directory(tmp_path: Path) -> None:
    now = [1000.0]
    size = len(rec(0).to_line())
    w = ShardWriter(
        tmp_path, max_bytes=8 * size, retention_s=3600, shard_bytes=2 * size, clock=lambda: now[0]
    )
    for i in range(40):
        now[0] += 1
        w.write(rec(i))
    total = sum(p.stat().st_size for p in shards(tmp_path))
    assert total <= 8 * size + 2 * size  # the bound, plus at most the shard being written
    kept = [r.id for r in read_records(tmp_path)]
    assert kept[-1] == "r39" and "r0" not in kept  # the oldest went first
    assert all(oct(p.stat().st_mode)[-3:] == "600" for p in shards(tmp_path))
    # age: shards past the retention are removed
    old = shards(tmp_path)[0]
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    w.retention_s = 3600
    assert old in w.evict(time.time())
    w.close()


def test_the_sink_samples_and_never_blocks_the_caller(tmp_path: Path) -> None:
    sink = CaptureSink(ShardWriter(tmp_path, 1 << 20, 3600), sample_rate=0.5, seed=0)
    taken = sum(sink.offer(lambda i=i: rec(i)) for i in range(200))
    sink.close()
    assert 60 < taken < 140 and sink.written + sink.dropped == taken
    assert len(list(read_records(tmp_path))) == sink.written
    off = CaptureSink(ShardWriter(tmp_path / "off", 1 << 20, 3600), sample_rate=0.0)
    assert not any(off.offer(lambda: rec(0)) for _ in range(20))
    off.close()
