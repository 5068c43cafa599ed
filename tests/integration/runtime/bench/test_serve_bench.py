"""A smoke run of `adaspec bench serve` on the fixtures (not a timed test: no figure is asserted).

Its command line is the smallest useful one; run by hand it reads

    adaspec bench serve --prompts 3 --max-tokens 8 --concurrency 1,2 --out DIR

Nearly all of its time is loading (serve's process first, then the in-process engine: each imports
torch, tunes kernels and calibrates); the four rows take under a second. Measured: 112 s on the 2-core
machine with a load average of 9-13 from other test runs, so the guard below is generous.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_serve_prints_four_rows_without_errors(fixture_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "adaspec.cli.main", "bench", "serve", "--prompts", "3", "--max-tokens", "8"]
    done = subprocess.run(
        [*cmd, "--concurrency", "1,2", "--out", str(out)], capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    table = [ln for ln in lines if ln.split()[:1] in (["engine"], ["http"])]
    assert [ln.split()[:3] for ln in table] == [
        ["engine", "1", "3"],
        ["http", "1", "3"],
        ["engine", "2", "3"],
        ["http", "2", "3"],
    ]
    assert all(ln.split()[-1] == "0" for ln in table), done.stdout  # the errors column
    assert any(ln.startswith("goal: HTTP at concurrency 1 keeps >= 95%") for ln in lines)
    results = json.loads((out / "results.json").read_text())
    assert [r["errors"] for r in results["rows"]] == [0, 0, 0, 0]
    assert all(r["tokens"] > 0 for r in results["rows"])
    # Every HTTP request is compared with the engine's; equal ids are reported, not asserted: each
    # process tunes its own kernels, whose float rounding may differ where two logits nearly tie.
    assert results["outputs"]["compared"] == 6
    assert (out / "report.md").read_text().count("\nengine ") == 2
    assert "SIGTERM" not in " ".join(results["notes"])  # serve drained and exited 0
