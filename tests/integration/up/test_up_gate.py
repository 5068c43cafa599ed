"""`adaspec up` with a deliberately broken adaptation recipe (a learning rate that wrecks the draft): the
drift is seen and the run goes ahead, but its offline gate refuses the candidate, the decision log says
why, and the stable revision never changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.workloads import Prompt

from .fleet import loop_settings, start_up, wait_for
from .test_up import drift_state, kinds, send, speculator

pytestmark = pytest.mark.timeout(600)


def test_a_worse_candidate_is_stopped_by_the_offline_gate(
    fixture_dir: Path, prompts: list[Prompt], tmp_path: Path
) -> None:
    settings = loop_settings(fixture_dir)
    settings["adapt"] = {**settings["adapt"], "steps": 40, "extra_args": ["--lr=5"]}
    up = start_up(tmp_path, settings)
    try:
        python = [p for p in prompts if p.lang == "python"]
        go = [p for p in prompts if p.lang == "go"]

        def reference_established() -> bool:
            send(up, python[:6])
            return drift_state(up).get("reference") is not None

        wait_for("a drift reference on Python traffic", reference_established, timeout=180, every=0)

        def drifted() -> bool:
            send(up, go[:6])
            return "drift" in kinds(up)

        wait_for("a drift decision on Go traffic", drifted, timeout=120, every=0)
        wait_for("an adaptation decision", lambda: "adapt" in kinds(up), timeout=30)

        def refused() -> dict[str, object] | None:
            return next((d for d in up.decisions() if d["kind"] == "adaptation_failed"), None)

        failed = wait_for("the run's failure in the decision log", refused, timeout=300, every=2)
        assert "offline gate refused it" in str(failed["reason"]), failed
        assert "held-out acceptance" in str(failed["reason"]), failed
        sp = speculator(up)
        assert sp["stableRevision"] == "static" and sp["canaryRevision"] is None, sp
        assert sp["phase"] == "steady", sp
        assert "start_canary" not in kinds(up) and "promote" not in kinds(up)
        assert up.serving("stable")["serving"]["revision"] == "static"
        registered = {r["revision"] for r in up.api("/api/v1/speculators/default/revisions")["items"]}
        assert registered <= {"static"}, registered  # no candidate was registered
    finally:
        code = up.stop()
    assert code == 0, up.log_text()[-3000:]
