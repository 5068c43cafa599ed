"""`adaspec demo --fixtures` end to end: it drives `adaspec up` through the loop and reads the control
plane's API for its live view, summary and plot (the demo is that API's consumer here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(900)


def test_the_demo_on_the_fixtures_shows_drift_adaptation_and_promotion(
    fixture_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "adaspec.cli.main",
        "demo",
        "--fixtures",
        f"--out={out}",
        "--after-requests=6",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "demo.json").read_text())
    kinds = [d["kind"] for d in report["decisions"]]
    assert kinds[:2] == ["drift", "adapt"] and "start_canary" in kinds and "promote" in kinds, kinds
    assert "reject" not in kinds and "rollback" not in kinds, kinds
    assert report["speculator"]["stableRevision"] != "static", report["speculator"]
    langs = [r["lang"] for r in report["requests"]]
    assert langs[0] == "python" and langs[-1] == "go"
    assert {r["role"] for r in report["requests"]} == {"stable", "canary"}
    samples = report["samples"]  # fetched incrementally while it ran: each once, all revisions seen
    assert len({(x["ts"], x["target"]) for x in samples}) == len(samples), "a sample was fetched twice"
    served = {(x["role"], x["revision"]) for x in samples if x["draftTokens"]}
    promoted = report["speculator"]["stableRevision"]
    assert {("stable", "static"), ("canary", promoted), ("stable", promoted)} <= served, served
    assert (out / "acceptance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = done.stdout
    for line in ("drift", "start_canary", "promote", "adaspec demo: summary", "go, after promote"):
        assert line in printed, printed[-3000:]
