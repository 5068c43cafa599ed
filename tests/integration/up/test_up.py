"""`adaspec up` on the fixtures as real processes: traffic through the front endpoint reaches the stable
runtime and its metrics the control plane; Go traffic (the draft knows only Python) drifts, a real
`adaspec adapt` run distils a candidate, and the control plane loads it into the canary runtime."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adaspec.runtime.workloads import Prompt

from .fleet import Up, start_up, wait_for

pytestmark = pytest.mark.timeout(600)
NEW = 32


@pytest.fixture(scope="module")
def fleet(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    settings: dict[str, Any] = {
        "target_model": str(fixture_dir / "target"),
        "static_draft": (fixture_dir / "draft").as_uri(),
        "preset": "demo",
        "strategy": "adaptive",
        "canary_share": 0.5,
        "capture_sample_rate": 1.0,
        # online learning barely moves the draft: the drift is the static draft's gap on Go
        "runtime": {"adaptive": {"computeShare": 0.05, "learningRate": 1e-7}},
        "adapt": {"last": 60, "steps": 100, "time_budget_s": 120, "min_heldout": 3},
        "control_plane": {
            "policies": {
                "drift": {
                    "min_draft_tokens": 300,
                    "reference_draft_tokens": 300,
                    "slack": 0.01,
                    "threshold": 0.05,
                }
            },
        },
    }
    up = start_up(tmp_path_factory.mktemp("up"), settings)
    try:
        yield up
    finally:
        code = up.stop()
        assert code == 0, up.log_text()[-3000:]


def send(up: Up, prompts: list[Prompt], stream: bool = False) -> dict[str, int]:
    """Greedy completions of `prompts` (as token ids) through the front; return requests per role."""
    client = up.openai()
    model = client.models.list().data[0].id
    roles: dict[str, int] = {}
    for p in prompts:
        raw = client.completions.with_raw_response.create(
            model=model, prompt=list(p.token_ids), max_tokens=NEW, temperature=0, stream=stream
        )
        role = raw.headers["x-adaspec-role"]
        roles[role] = roles.get(role, 0) + 1
        out = raw.parse()
        if stream:
            assert "".join(c.choices[0].text for c in out if c.choices)
        else:
            assert out.usage.completion_tokens > 0
    return roles


def kinds(up: Up) -> list[str]:
    return [d["kind"] for d in up.decisions()]


def test_traffic_through_the_front_reaches_stable_and_the_control_plane(
    fleet: Up, prompts: list[Prompt]
) -> None:
    python = [p for p in prompts if p.lang == "python"]
    assert send(fleet, python[:3], stream=True) == {"stable": 3}  # no canary yet: all to stable
    assert send(fleet, python) == {"stable": len(python)}

    def measured() -> dict[str, Any] | None:
        (sp,) = fleet.api("/api/v1/speculators")["items"]
        return sp if sp["acceptanceRate"] is not None else None

    sp = wait_for("acceptance of the stable runtime", measured, timeout=60)
    assert sp["name"] == "default" and sp["phase"] == "steady" and sp["stableRevision"] == "static"
    assert 0 < sp["acceptanceRate"] <= 1, sp
    samples = fleet.api("/api/v1/speculators/default/metrics")["items"]
    stable = [s for s in samples if s["role"] == "stable"]
    assert all(s["revision"] == "static" for s in stable), stable
    assert stable and sum(s["draftTokens"] for s in stable) > 0, samples
    assert "drift" not in kinds(fleet)


def drift_state(up: Up) -> dict[str, Any]:
    """The drift policy's state as the control plane stored it (the API does not show it)."""
    with contextlib.closing(sqlite3.connect(up.state / "controlplane.db")) as db:
        rows = db.execute("SELECT state FROM speculators").fetchall()
    if not rows:
        return {}
    state: dict[str, Any] = json.loads(rows[0][0] or "{}").get("drift") or {}
    return state


@pytest.mark.skip(
    reason="quarantined: failed 2 of its last 7 runs (no drift seen in 120 s); on the fixtures the Python "
    "reference (0.15-0.23) and Go acceptance differ by less than the window-to-window spread, so drift is "
    "not reliably seen (issue 9: needs a larger, stable acceptance gap)"
)
def test_go_traffic_drifts_adapts_and_loads_a_canary(fleet: Up, prompts: list[Prompt]) -> None:
    python = [p for p in prompts if p.lang == "python"]
    go = [p for p in prompts if p.lang == "go"]

    # the reference must be made of Python traffic alone: send Python until the drift policy's stored state
    # says the reference is established (a fixed sleep raced the evaluation interval)
    def reference_established() -> bool:
        send(fleet, python[:8])
        return drift_state(fleet).get("reference") is not None

    send(fleet, python)
    wait_for("a drift reference on Python traffic", reference_established, timeout=180, every=0)

    def drifted() -> bool:
        send(fleet, go[:8])
        return "drift" in kinds(fleet)

    wait_for("a drift decision on Go traffic", drifted, timeout=120, every=0)
    send(fleet, go)  # more Go in the capture while the run starts
    wait_for("an adaptation decision", lambda: "adapt" in kinds(fleet), timeout=30)

    def canary() -> str | None:
        (sp,) = fleet.api("/api/v1/speculators")["items"]
        return None if sp["canaryRevision"] is None else str(sp["canaryRevision"])

    revision = wait_for("a candidate in canary", canary, timeout=240, every=2)
    revisions = fleet.api("/api/v1/speculators/default/revisions")["items"]
    assert any(r["revision"] == revision for r in revisions), revisions
    assert "start_canary" in kinds(fleet)
    wait_for(
        "the canary runtime serving the candidate",
        lambda: (fleet.serving("canary")["serving"] or {}).get("revision") == revision,
        timeout=60,
    )
    assert fleet.serving("stable")["serving"]["revision"] == "static"
    roles = send(fleet, go)  # with a canary in service the front splits the traffic
    assert roles.get("canary", 0) > 0 and roles.get("stable", 0) > 0, roles


def test_a_restart_with_the_same_state_dir_resumes(fleet: Up) -> None:
    (before,) = fleet.api("/api/v1/speculators")["items"]
    decided = kinds(fleet)
    assert fleet.stop() == 0, fleet.log_text()[-3000:]
    again = start_up(fleet.state.parent, {})
    try:
        (after,) = again.api("/api/v1/speculators")["items"]
        assert after["stableRevision"] == before["stableRevision"]
        assert after["canaryRevision"] == before["canaryRevision"]
        assert kinds(again)[: len(decided)] == decided  # the decision log survived
        if before["canaryRevision"] is not None:  # the canary runtime starts with it again
            assert again.serving("canary")["serving"]["revision"] == before["canaryRevision"]
        assert again.serving("stable")["serving"]["revision"] == before["stableRevision"]
    finally:
        assert again.stop() == 0, again.log_text()[-3000:]
