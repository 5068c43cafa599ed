"""The closed loop on Kubernetes, from `kubectl apply` of an AdaptiveSpeculator to a promotion, against the
real API server, with the operator and the control plane as processes under their own ServiceAccounts and
every adaspec pod (runtimes, the adaptation Job) run for real by the pod runner (tests/e2e/podrunner.py).

The models are the fixtures: a target trained on Python and Go, a static draft distilled from it on Python
only, so Go traffic is a drift the loop must see and can mend. The settings are `adaspec demo --fixtures`'s
(docs in adaspec.runtime.demo.settings), given the way a platform team gives them: the speculator's policies
in its CR, the fleet's defaults in the control plane's settings.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from adaspec.controlplane.counters import delta
from adaspec.controlplane.scrape import parse_exposition
from adaspec.runtime.demo.settings import demo_settings
from adaspec.runtime.up.config import PRESETS, AdaptSettings, adapt_recipe, deep_merge

from .loop import ControlPlaneProcess, Fleet, free_port, wait_for

pytestmark = [pytest.mark.timeout(1500), pytest.mark.slow]
NS, OPS_NS, NAME, CLAIM = "loop", "loop-ops", "coder", "fleet-data"
RUNNER = {"adaspec.dev/pod-runner": "true"}
SCRAPE_S = float(PRESETS["demo"]["scrape_interval_s"])


def speculator_cr(fixture_dir: Path, paused: bool = False) -> dict[str, Any]:
    """The AdaptiveSpeculator: the demo's runtime settings and policies, in CR form."""
    return {
        "apiVersion": "adaspec.dev/v1alpha1",
        "kind": "AdaptiveSpeculator",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "targetModel": {"uri": str(fixture_dir / "target")},
            "staticDraft": {"uri": (fixture_dir / "draft").resolve().as_uri()},
            "runtime": {
                "image": "ghcr.io/adaspec/runtime:test",
                "strategy": "adaptive",
                "nodeSelector": RUNNER,
                "startupTimeout": "5m",
            },
            "adaptive": {"computeShare": 0.05, "learningRate": 1e-7},
            "controller": {"minLookahead": 3, "maxLookahead": 3},
            "capture": {"enabled": True, "sampleRate": 1.0},
            "adaptation": {"driftThreshold": 0.1, "driftWindow": "10m", "cooldown": "60s"},
            "promotion": {
                "analysisInterval": "6s",
                "minSamples": 60,
                "minImprovement": 0.0,
                "failureLimit": 2,
            },
            "rollback": {"maxAcceptanceDrop": 0.05, "guardWindow": "60s"},
            "storage": {"claimName": CLAIM},
            "paused": paused,
        },
    }


def control_plane_settings(workdir: Path, port: int) -> dict[str, Any]:
    """Fleet defaults of the demo preset; the fleet itself comes from the cluster (no speculator list)."""
    demo = demo_settings(Path("unused"), Path("unused"), fixtures=True)
    preset = deep_merge(PRESETS["demo"], demo["control_plane"])
    return {
        "db_url": f"sqlite:///{workdir / 'controlplane.db'}",
        "state_dir": str(workdir),
        **{
            k: preset[k] for k in ("scrape_interval_s", "evaluate_interval_s", "stale_after_s", "lease_ttl_s")
        },
        "policies": preset["policies"],
        "actuator": "kubernetes",
        "kubernetes": {
            "namespaces": [NS],
            "register_url": f"http://127.0.0.1:{port}",
            # the demo's recipe on a 40-request window: the held-out quarter (by a hash of random
            # request ids) then falls below the gate's 3 requests about once in a thousand runs, not once
            # in a hundred as with 30
            "job_extra_args": adapt_recipe(AdaptSettings.model_validate({**demo["adapt"], "last": 40})),
        },
        "auth": {
            "mode": "tokenreview",
            "admin_groups": [f"system:serviceaccounts:{OPS_NS}"],
            "read_groups": [],
            "register_service_accounts": ["adaspec-adaptation"],
        },
    }


def storage(host_dir: Path) -> list[dict[str, Any]]:
    """A hostPath PersistentVolume bound to the claim (the pod runner mounts its path), and the claim."""
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"{NS}-{CLAIM}"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "hostPath": {"path": str(host_dir)},
            "claimRef": {"namespace": NS, "name": CLAIM},
        },
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": NS},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "",
            "volumeName": f"{NS}-{CLAIM}",
            "resources": {"requests": {"storage": "10Gi"}},
        },
    }
    return [pv, pvc]


def apply(cluster: Any, *objects: dict[str, Any]) -> None:
    cluster.kubectl(
        "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )


@pytest.fixture(scope="module")
def fleet(
    installed: Any,
    operator: Any,
    pod_runner: Any,
    fixture_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """The namespace with its claim and adaptation ServiceAccount (manifests/sample/storage.yaml's, in
    this namespace), the control plane running, and the speculator applied with kubectl."""
    cluster = installed
    work = tmp_path_factory.mktemp("loop")
    shared = work / "claim"
    shared.mkdir(mode=0o777)
    for ns in (NS, OPS_NS):
        cluster.kubectl("create", "namespace", ns)
    sample = (Path(__file__).resolve().parents[2] / "manifests" / "sample" / "storage.yaml").read_text()
    account = [d for d in sample.split("---") if "kind: ServiceAccount" in d][0]
    cluster.kubectl(
        "apply", "-n", NS, "-f", "-", stdin=account.replace("namespace: default", f"namespace: {NS}")
    )
    apply(cluster, *storage(shared))
    cluster.kubectl("create", "serviceaccount", "ops", "-n", OPS_NS)
    token = cluster.kubectl("create", "token", "ops", "-n", OPS_NS, "--duration=2h").stdout.strip()

    port = free_port()
    env = {
        **cluster.env(),
        "PYTHONUNBUFFERED": "1",
        "KUBECONFIG": str(cluster.service_account_kubeconfig("adaspec-control-plane")),
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    cp = ControlPlaneProcess(control_plane_settings(work, port), work, env, port)
    cp.start()
    manifest = work / "speculator.json"
    manifest.write_text(json.dumps(speculator_cr(fixture_dir)))
    cluster.kubectl("apply", "-f", str(manifest))
    f = Fleet(cluster, NS, NAME, cp, token)
    f.shared = shared  # type: ignore[attr-defined]
    f.manifest = manifest  # type: ignore[attr-defined]
    try:
        yield f
    finally:
        if os.environ.get("ADASPEC_E2E_SHOW_LOG"):
            print(cp.tail(200), pod_runner.logs(NS)[-20000:], operator.tail(100))
        cp.stop()
        cluster.kubectl("delete", "aspec", NAME, "-n", NS, "--wait=false", check=False)
        cluster.kubectl("delete", "namespace", NS, OPS_NS, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", f"{NS}-{CLAIM}", "--wait=false", check=False)


def acceptance_of(fleet: Fleet, prompts: list[Any]) -> tuple[float, str]:
    """Send `prompts` to the stable pod; return the acceptance rate its own `/metrics` counted for them
    (read by the control plane's parser) and the revision it says it serves."""
    (pod,) = fleet.pods("stable")
    url = f"http://{pod['status']['podIP']}:9090/metrics"

    def scrape() -> Any:
        return parse_exposition(httpx.get(url, timeout=10).text, "runtime")

    before = scrape()
    fleet.send(prompts, role="stable")
    after = scrape()
    window = delta(before.counters, after.counters)
    assert window.acceptance_rate is not None and after.revision is not None
    return window.acceptance_rate, after.revision


def failure_context(fleet: Fleet, runner: Any, operator: Any) -> str:
    return (
        f"control plane:\n{fleet.cp.tail(80)}\noperator:\n{operator.tail(40)}\n"
        f"pods:\n{runner.logs(NS)[-6000:]}\ndecisions: {fleet.kinds()}"
    )


def test_apply_drift_adapt_canary_promote_with_restarts(
    fleet: Fleet, operator: Any, pod_runner: Any, prompts: list[Any]
) -> None:
    python = [p for p in prompts if p.lang == "python"]
    go = [p for p in prompts if p.lang == "go"][:20]
    fresh = [p for p in prompts if p.lang == "go"][20:]  # measures before and after, never in the capture
    try:
        run_loop(fleet, operator, python, go, fresh)
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"{exc}\n{failure_context(fleet, pod_runner, operator)}") from exc


def run_loop(fleet: Fleet, operator: Any, python: list[Any], go: list[Any], fresh: list[Any]) -> None:
    # `kubectl apply` -> the operator's Deployment -> a pod serving the static draft, found by discovery
    wait_for("a ready stable pod", lambda: fleet.serving("stable") == ["static"], timeout=300)
    sp = wait_for("the control plane discovering the CR", lambda: _speculator_or_none(fleet), timeout=60)
    assert (sp["namespace"], sp["stableRevision"], sp["phase"]) == (NS, "static", "steady")

    def reference() -> bool:
        fleet.send(python[:6])
        return fleet.speculator()["drift"].get("reference") is not None

    wait_for("a drift reference on Python", reference, timeout=240, every=0)
    python_before, served = acceptance_of(fleet, python[:12])
    go_before, _ = acceptance_of(fleet, fresh)
    assert served == "static" and python_before > go_before + 0.1, (python_before, go_before)

    def drifted() -> bool:
        fleet.send(go[:6])
        return "drift" in fleet.kinds()

    wait_for("drift on Go", drifted, timeout=240, every=0)
    assert fleet.kinds()[: fleet.kinds().index("drift")] == [], fleet.kinds()  # no false alarm before
    fleet.send(go)  # more Go in the capture while the Job starts
    job = wait_for(
        "the adaptation Job", lambda: _one(fleet.get("jobs", "-l", f"adaspec.dev/speculator={NAME}")), 60
    )
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][0] == "adapt"

    # the operator restarts while the Job runs: nothing it owns changes, nothing is done twice
    operator.stop()
    operator.start()

    def canary() -> str | None:
        return fleet.status().get("canaryRevision")

    revision = wait_for("a candidate in canary", canary, timeout=420, every=2)
    transcript(fleet, "the candidate in canary")
    wait_for("a ready canary pod serving it", lambda: fleet.serving("canary") == [revision], timeout=180)
    jobs = fleet.get("jobs", "-l", f"adaspec.dev/speculator={NAME}")["items"]
    assert len(jobs) == 1 and (jobs[0]["status"].get("succeeded") or 0) == 1, jobs
    (cand,) = [
        r for r in fleet.api(f"/api/v1/speculators/{NAME}/revisions")["items"] if r["revision"] == revision
    ]
    specrev = fleet.get("specrev", f"{NAME}-{revision}")
    (canary_pod,) = fleet.pods("canary")
    args = canary_pod["spec"]["containers"][0]["args"]
    # one sha256 from adapt's manifest to the runtime's check: store, SpeculatorRevision, pod argument
    assert cand["sha256"] and specrev["spec"]["sha256"] == cand["sha256"], (cand, specrev)
    assert f"--draft-sha256={cand['sha256']}" in args and f"--draft-revision={revision}" in args
    assert specrev["spec"]["artifactUri"] == cand["artifactUri"]
    assert f"--draft-artifact={cand['artifactUri']}" in args
    assert cand["parent"] == "static" and specrev["spec"]["parentRevision"] == "static"
    offline = cand["metrics"]
    assert offline["offline_acceptance_rate"] > offline["offline_parent_acceptance_rate"], offline

    # the control plane restarts in mid-canary: the canary goes on, no decision is made twice
    decided = fleet.kinds()
    fleet.cp.stop()
    fleet.cp.start()
    assert fleet.kinds() == decided and fleet.status().get("canaryRevision") == revision

    roles: Counter[str] = Counter()

    def promoted() -> bool:
        roles.update(fleet.send(go[:8]))  # both Deployments' pods share the traffic
        return fleet.status().get("stableRevision") == revision

    wait_for("the canary's promotion", promoted, timeout=300, every=0)
    assert roles["canary"] > 0 and roles["stable"] > 0, roles
    kinds = fleet.kinds()
    assert kinds == ["drift", "adapt", "start_canary", "promote"], kinds
    wait_for("the stable Deployment rolled to it", lambda: fleet.serving("stable") == [revision], timeout=300)
    wait_for(
        "the canary Deployment gone", lambda: fleet.get("deployment", f"{NAME}-canary") is None, timeout=60
    )
    assert fleet.get("specrev", f"{NAME}-{revision}")["status"]["phase"] == "Promoted"

    # status figures: the control plane's window over the new stable pod, which serves only what is sent
    # here once the control plane has its base line (a scrape before any request)
    time.sleep(3 * SCRAPE_S)
    go_after, served = acceptance_of(fleet, fresh)
    assert served == revision and go_after > go_before, (go_before, go_after)
    print(f"\nacceptance: Python {python_before:.3f}, Go {go_before:.3f} -> {go_after:.3f} ({revision})")

    def figures_match() -> bool:
        st = fleet.status()
        return st.get("acceptanceRate") is not None and abs(st["acceptanceRate"] - go_after) <= 5e-5

    wait_for("the status showing the pod's acceptance", figures_match, timeout=60)
    assert abs(fleet.speculator()["acceptanceRate"] - fleet.status()["acceptanceRate"]) <= 5e-5
    printed = fleet.cluster.kubectl("get", "aspec", NAME, "-n", NS).stdout
    transcript(fleet, "after the promotion")
    header, row = printed.splitlines()[:2]
    starts = [header.index(h) for h in header.split()]  # kubectl's columns are fixed-width
    columns = {
        header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)
    }
    assert columns["STABLE"] == revision and abs(float(columns["ACCEPTANCE"]) - go_after) < 1e-3, printed
    fleet.promoted = revision  # type: ignore[attr-defined]


def transcript(fleet: Fleet, when: str) -> None:
    """Print what a user sees (the README shows it as printed)."""
    print(f"\n--- {when}: kubectl get aspec,specrev,jobs -n {NS}")
    print(fleet.cluster.kubectl("get", "aspec,specrev,jobs", "-n", NS).stdout)
    for d in fleet.decisions():
        if d["kind"] != "canary_check":
            rev = d["revision"] or ""
            print(f"{d['at'][11:19]}  {d['kind']:<18} {d['actor']:<10} {rev:<14} {d['reason']}")


def _speculator_or_none(fleet: Fleet) -> dict[str, Any] | None:
    try:
        return fleet.speculator()
    except httpx.HTTPStatusError:
        return None


def _one(listed: dict[str, Any] | None) -> dict[str, Any] | None:
    items = (listed or {}).get("items") or []
    return items[0] if items else None


def test_a_worse_candidate_is_rolled_back_by_the_guard(
    fleet: Fleet, operator: Any, pod_runner: Any, prompts: list[Any], fixture_dir: Path
) -> None:
    """The static draft packaged as a revision is worse on Go than the promoted one: promoted by hand
    (canary, then promote), the guard sees the drop on the stable pod and rolls back to the parent."""
    good = getattr(fleet, "promoted", None)
    if good is None:
        pytest.fail("needs the promotion of test_apply_drift_adapt_canary_promote_with_restarts")
    go = [p for p in prompts if p.lang == "go"]
    try:

        def steady() -> bool:  # the promotion's own guard window ends first (guard_passed)
            fleet.send(go[:3], role="stable")
            return fleet.speculator()["phase"] == "steady"

        wait_for("the promotion's guard window over", steady, timeout=180, every=0)
        worse = register_static_as_revision(fleet, fixture_dir, "worse")
        r = fleet.post(f"/api/v1/speculators/{NAME}/promote", {"revision": worse, "reason": "by hand"})
        assert r.status_code == 200, r.text
        wait_for("the worse canary serving", lambda: fleet.serving("canary") == [worse], timeout=180)
        r = fleet.post(f"/api/v1/speculators/{NAME}/promote", {"reason": "skip the analysis"})
        assert r.status_code == 200, r.text
        wait_for("the stable pod serving the worse", lambda: fleet.serving("stable") == [worse], timeout=300)

        def rolled_back() -> bool:
            fleet.send(go[:6], role="stable")
            return "rollback" in fleet.kinds()

        wait_for("the guard's rollback", rolled_back, timeout=240, every=0)
        wait_for(
            "the stable pod serving the good one", lambda: fleet.serving("stable") == [good], timeout=300
        )
        assert fleet.status()["stableRevision"] == good
        assert fleet.get("specrev", f"{NAME}-{worse}")["status"]["phase"] == "RolledBack"
        (d,) = [d for d in fleet.decisions() if d["kind"] == "rollback"]
        assert d["actor"] == "policy" and d["inputs"]["previous_revision"] == good, d
        transcript(fleet, "after the guard's rollback")
    except (AssertionError, TimeoutError) as exc:
        raise AssertionError(f"{exc}\n{failure_context(fleet, pod_runner, operator)}") from exc


def register_static_as_revision(fleet: Fleet, fixture_dir: Path, revision: str) -> str:
    """Write the static draft as a revision on the claim and register it with the control plane."""
    from adaspec.runtime.adapt.run import load_parent
    from adaspec.runtime.artifacts import manifest_sha256, save_revision
    from adaspec.runtime.models import tokenizer_fingerprint
    from adaspec.runtime.server.locations import storage_uri

    tok = tokenizer_fingerprint(fixture_dir / "target")
    out = fleet.shared / "revisions" / NAME / revision  # type: ignore[attr-defined]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_revision(
        load_parent(fixture_dir / "draft", tok, "cpu"),
        out,
        revision=revision,
        parent="static",
        target_model="target",
        tokenizer_sha256=tok,
    )
    uri = storage_uri(f"revisions/{NAME}/{revision}")  # on the claim, as a Job registers its candidate
    body = {"revision": revision, "artifact_uri": uri, "sha256": manifest_sha256(out), "metrics": {}}
    r = fleet.post(f"/api/v1/speculators/{NAME}/revisions", body)
    assert r.status_code == 201, r.text
    return revision


def test_a_paused_speculator_gets_no_action(fleet: Fleet, prompts: list[Any]) -> None:
    cluster = fleet.cluster
    before = fleet.decisions()
    cluster.kubectl("patch", "aspec", NAME, "-n", NS, "--type=merge", "-p", '{"spec": {"paused": true}}')
    wait_for("the pause", lambda: fleet.kinds()[-1:] == ["pause"], timeout=30)
    pause = fleet.decisions()[-1]
    assert pause["actor"] == "kubernetes" and pause["reason"] == "spec.paused is true", pause
    # a person cannot act on it either while its resource holds it
    r = fleet.post(f"/api/v1/speculators/{NAME}/promote", {"revision": "worse", "reason": "try"})
    assert r.status_code == 409 and "holds every change" in r.text, r.text
    assert fleet.post(f"/api/v1/speculators/{NAME}/resume", {"reason": "try"}).status_code == 409
    fleet.send([p for p in prompts if p.lang == "python"][:6])  # traffic is served and measured
    time.sleep(3 * SCRAPE_S)
    after = fleet.decisions()
    assert [d["kind"] for d in after[len(before) :]] == ["pause"], after[len(before) :]
    assert fleet.status().get("canaryRevision") is None
    cluster.kubectl("patch", "aspec", NAME, "-n", NS, "--type=merge", "-p", '{"spec": {"paused": false}}')
    wait_for("the resume", lambda: fleet.kinds()[-1:] == ["resume"], timeout=30)
    assert fleet.speculator()["phase"] != "paused"
