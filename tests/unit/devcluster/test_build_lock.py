"""Builders of one component/version take turns on the cache (`build.cache_lock`); a waiter skips."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adaspec.devcluster import build

ETCD = next(c for c in build.COMPONENTS if c.name == "etcd")


class FakeMake:
    """A stand-in for `go_build`: counts the builds running at once, then writes binaries (or fails)."""

    def __init__(self, *, succeed: bool) -> None:
        self.succeed = succeed
        self.calls = 0
        self.active = 0
        self.most_active = 0
        self.guard = threading.Lock()

    def __call__(self, component: build.Component, root: Path, jobs: int) -> None:
        with self.guard:
            self.calls += 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(0.2)  # long enough for every other thread to reach the lock meanwhile
        with self.guard:
            self.active -= 1
        if not self.succeed:
            raise RuntimeError("fake build failed")
        out = build.bin_dir(component, root)
        out.mkdir(parents=True, exist_ok=True)
        for name in component.binaries():
            (out / name).write_text("#!/bin/true\n")


def run_builders(root: Path, make: FakeMake, n: int) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def one() -> None:
        start.wait()
        try:
            build.build(ETCD, root, make=make)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return errors


def test_concurrent_builders_build_once_and_the_others_skip(tmp_path: Path) -> None:
    make = FakeMake(succeed=True)
    assert run_builders(tmp_path, make, 4) == []
    assert make.most_active == 1
    assert make.calls == 1
    assert build.is_built(ETCD, tmp_path)


def test_the_lock_is_held_for_the_whole_build_and_released_when_it_fails(tmp_path: Path) -> None:
    make = FakeMake(succeed=False)
    errors = run_builders(tmp_path, make, 3)
    assert len(errors) == 3  # each waiter found nothing built, so built (and failed) in its turn
    assert make.most_active == 1
    assert make.calls == 3


def test_the_lock_excludes_another_process(tmp_path: Path) -> None:
    holder = (
        "import sys; from pathlib import Path; from adaspec.devcluster import build\n"
        "etcd = next(c for c in build.COMPONENTS if c.name == 'etcd')\n"
        f"with build.cache_lock(etcd, Path({str(tmp_path)!r})):\n"
        "    print('locked', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "locked"
        lock_file = tmp_path / "etcd" / ETCD.version / "build.lock"
        with lock_file.open("a") as fh:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with its holder
    finally:
        proc.kill() if proc.poll() is None else None
        proc.stdout.close()


BUILDER = """
import sys, time
from pathlib import Path
from adaspec.devcluster import build

root = Path(sys.argv[1])
log = root / "events.log"
fake = build.Component("fake", "example.com/fake", "v0.0.1", ("example.com/fake/cmd/fake",))


def note(event):
    with log.open("a") as fh:
        fh.write(event + "\\n")


def make(component, root, jobs):
    note("build started")
    time.sleep(1.0)  # the other process arrives at the lock meanwhile
    out = build.bin_dir(component, root)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fake").write_text("#!/bin/true\\n")
    note("build finished")


note("arrived")
print(build.build(fake, root, make=make), flush=True)
"""


def test_two_processes_building_one_component_build_it_once(tmp_path: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    out = tmp_path / "fake" / "v0.0.1" / "bin"
    assert [r[0].strip() for r in results] == [str(out)] * 2
    events = (tmp_path / "events.log").read_text().splitlines()
    assert events.count("build started") == 1 and events.count("build finished") == 1
    assert events.index("build finished") > max(i for i, e in enumerate(events) if e == "arrived")  # at once
    assert (out / "fake").is_file()
