"""`adaspec up` on the fixtures as real processes, the whole loop: traffic through the front endpoint reaches
the stable runtime and its metrics the control plane; Go traffic (the draft was distilled on Python only)
drifts, a real `adaspec adapt` run distils a candidate that its offline gate passes, the control plane
loads it into the canary runtime, a restart of `up` in mid-canary finishes the canary without a repeated
action, and the canary analysis promotes it: the stable runtime then accepts more of Go than before."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adaspec.controlplane.counters import delta
from adaspec.controlplane.scrape import parse_exposition
from adaspec.runtime.workloads import Prompt

from .fleet import Up, loop_settings, start_up, wait_for

pytestmark = pytest.mark.timeout(900)
NEW = 32


@pytest.fixture(scope="module")
def fleet(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Up]]:
    """The running `up` (a list: a test that restarts it puts the new one in its place)."""
    ups = [start_up(tmp_path_factory.mktemp("up"), loop_settings(fixture_dir))]
    try:
        yield ups
    finally:
        code = ups[0].stop()
        assert code == 0, ups[0].log_text()[-3000:]


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


def acceptance_on(up: Up, role: str, prompts: list[Prompt]) -> tuple[float, str]:
    """Send `prompts` straight to runtime `role` (not through the front); return the acceptance rate its
    `/metrics` counted for them (read by the control plane's own parser) and the revision it served."""
    rt = up.info()["runtimes"][role]

    def scrape() -> Any:
        return parse_exposition(httpx.get(rt["metrics_url"], timeout=10).text, "runtime")

    before = scrape()
    for p in prompts:
        body = {"prompt": list(p.token_ids), "max_tokens": NEW, "temperature": 0}
        httpx.post(rt["url"] + "/v1/completions", json=body, timeout=60).raise_for_status()
    after = scrape()
    window = delta(before.counters, after.counters)
    assert window.draft_tokens > 0 and after.revision is not None, after
    assert window.acceptance_rate is not None
    return window.acceptance_rate, after.revision


def kinds(up: Up) -> list[str]:
    return [d["kind"] for d in up.decisions()]


def speculator(up: Up) -> dict[str, Any]:
    (sp,) = up.api("/api/v1/speculators")["items"]
    return dict(sp)


def drift_state(up: Up) -> dict[str, Any]:
    """The drift detector's progress on the stable revision, as the control plane's API shows it."""
    return dict(speculator(up)["drift"])


def test_traffic_through_the_front_reaches_stable_and_the_control_plane(
    fleet: list[Up], prompts: list[Prompt]
) -> None:
    up = fleet[0]
    python = [p for p in prompts if p.lang == "python"]
    assert send(up, python[:3], stream=True) == {"stable": 3}  # no canary yet: all to stable
    assert send(up, python) == {"stable": len(python)}

    def measured() -> dict[str, Any] | None:
        sp = speculator(up)
        return sp if sp["acceptanceRate"] is not None else None

    sp = wait_for("acceptance of the stable runtime", measured, timeout=60)
    assert sp["name"] == "default" and sp["phase"] == "steady" and sp["stableRevision"] == "static"
    assert 0 < sp["acceptanceRate"] <= 1, sp
    samples = up.api("/api/v1/speculators/default/metrics")["items"]
    stable = [s for s in samples if s["role"] == "stable"]
    assert all(s["revision"] == "static" for s in stable), stable
    assert stable and sum(s["draftTokens"] for s in stable) > 0, samples
    assert "drift" not in kinds(up)


def test_go_traffic_drifts_adapts_canaries_and_promotes_across_a_restart(
    fleet: list[Up], prompts: list[Prompt]
) -> None:
    python = [p for p in prompts if p.lang == "python"]
    go = [p for p in prompts if p.lang == "go"][:20]
    fresh = [p for p in prompts if p.lang == "go"][20:]  # never sent through the front: the before/after test
    up = fleet[0]

    # the reference must be made of Python traffic alone: send Python until the drift policy's stored
    # state says the reference is established
    def reference_established() -> bool:
        send(up, python[:6])
        return drift_state(up).get("reference") is not None

    wait_for("a drift reference on Python traffic", reference_established, timeout=180, every=0)
    python_before, served = acceptance_on(up, "stable", python[:12])
    go_before, _ = acceptance_on(up, "stable", fresh)
    assert served == "static"
    assert python_before > go_before + 0.1, (python_before, go_before)  # the drift the loop must see

    def drifted() -> bool:
        send(up, go[:6])
        return "drift" in kinds(up)

    wait_for("a drift decision on Go traffic", drifted, timeout=120, every=0)
    assert "drift" not in kinds(up)[: kinds(up).index("drift")]  # no false alarm on Python before it
    send(up, go)  # more Go in the capture while the run starts
    wait_for("an adaptation decision", lambda: "adapt" in kinds(up), timeout=30)

    def canary() -> str | None:
        sp = speculator(up)
        return None if sp["canaryRevision"] is None else str(sp["canaryRevision"])

    revision = wait_for("a candidate in canary", canary, timeout=300, every=2)
    (cand,) = [
        r for r in up.api("/api/v1/speculators/default/revisions")["items"] if r["revision"] == revision
    ]
    offline = cand["metrics"]
    assert cand["parent"] == "static" and cand["sha256"], cand
    assert offline["offline_acceptance_rate"] > offline["offline_parent_acceptance_rate"], offline
    wait_for(
        "the canary runtime serving the candidate",
        lambda: (up.serving("canary")["serving"] or {}).get("revision") == revision,
        timeout=60,
    )
    assert up.serving("stable")["serving"]["revision"] == "static"

    # restart in mid-canary (no traffic has been sent to the canary: no check can have passed yet)
    decided = kinds(up)
    assert decided.count("start_canary") == 1 and "promote" not in decided, decided
    assert up.stop() == 0, up.log_text()[-3000:]
    up = fleet[0] = start_up(up.state.parent, {})
    assert speculator(up)["canaryRevision"] == revision
    assert up.serving("canary")["serving"]["revision"] == revision
    assert kinds(up)[: len(decided)] == decided

    roles: Counter[str] = Counter()

    def promoted() -> bool:
        roles.update(send(up, go[:8]))  # with a canary in service the front splits the traffic
        return bool(speculator(up)["stableRevision"] == revision)

    wait_for("the canary's promotion", promoted, timeout=180, every=0)
    assert roles["canary"] > 0 and roles["stable"] > 0, roles
    after = kinds(up)
    assert after.count("start_canary") == 1 and after.count("promote") == 1, after
    assert after.count("adapt") == 1 and "reject" not in after and "rollback" not in after, after
    wait_for(
        "the stable runtime serving the promoted revision",
        lambda: up.serving("stable")["serving"]["revision"] == revision,
        timeout=60,
    )
    go_after, served = acceptance_on(up, "stable", fresh)
    assert served == revision
    assert go_after > go_before, (go_before, go_after, python_before)


def test_a_restart_with_the_same_state_dir_resumes(fleet: list[Up]) -> None:
    up = fleet[0]
    before = speculator(up)
    decided = kinds(up)
    assert up.stop() == 0, up.log_text()[-3000:]
    again = fleet[0] = start_up(up.state.parent, {})
    after = speculator(again)
    assert after["stableRevision"] == before["stableRevision"]
    assert after["canaryRevision"] == before["canaryRevision"]
    assert kinds(again)[: len(decided)] == decided  # the decision log survived
    if before["canaryRevision"] is not None:  # the canary runtime starts with it again
        assert again.serving("canary")["serving"]["revision"] == before["canaryRevision"]
    assert again.serving("stable")["serving"]["revision"] == before["stableRevision"]
