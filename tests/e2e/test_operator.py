"""The operator against a real API server: children, pods on fake GPU nodes, status, rollouts, canary, GC."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
NS = "default"
CHILD_KINDS = ("deployments", "services", "configmaps", "poddisruptionbudgets")
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.5) -> T:
    """Poll `check` until it returns a truthy value; return it, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except AssertionError as exc:  # a kubectl call that failed: keep polling
            value, last = None, exc
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def get_json(cluster: Any, *args: str) -> Any:
    """Return `kubectl get ... -o json` parsed, or None when the object does not exist."""
    proc = cluster.kubectl("get", *args, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise AssertionError(proc.stderr)
    return json.loads(proc.stdout)


def create_speculator(cluster: Any, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "adaspec.dev/v1alpha1",
        "kind": "AdaptiveSpeculator",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"targetModel": {"uri": "hf://org/target"}, **spec},
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(body))
    obj: dict[str, Any] = get_json(cluster, "aspec", name, "-n", NS)
    return obj


def status(cluster: Any, name: str) -> dict[str, Any]:
    obj = get_json(cluster, "aspec", name, "-n", NS) or {}
    st: dict[str, Any] = obj.get("status") or {}
    return st


def ready(cluster: Any, name: str) -> dict[str, Any] | None:
    """Return the speculator when its status says Ready for its current generation."""
    obj = get_json(cluster, "aspec", name, "-n", NS)
    st = (obj or {}).get("status") or {}
    if st.get("phase") == "Ready" and st.get("observedGeneration") == obj["metadata"]["generation"]:
        return obj  # type: ignore[no-any-return]
    return None


def children(cluster: Any, name: str) -> dict[str, list[dict[str, Any]]]:
    sel = f"app.kubernetes.io/instance={name},app.kubernetes.io/name=adaspec"
    out = {}
    for kind in CHILD_KINDS:
        out[kind] = get_json(cluster, kind, "-n", NS, "-l", sel)["items"]
    return out


def running_pods(cluster: Any, name: str, role: str) -> list[dict[str, Any]]:
    sel = f"app.kubernetes.io/instance={name},adaspec.dev/role={role}"
    pods = get_json(cluster, "pods", "-n", NS, "-l", sel)["items"]
    return [
        p
        for p in pods
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def events_of(cluster: Any, name: str) -> list[dict[str, Any]]:
    """Return the Events about one object (kopf posts them asynchronously: poll)."""
    items: list[dict[str, Any]] = get_json(
        cluster, "events", "-n", NS, "--field-selector", f"involvedObject.name={name}"
    )["items"]
    return items


def set_status(cluster: Any, name: str, patch: dict[str, Any]) -> None:
    """Patch the status the way the control plane does (docs/CONTRACTS.md)."""
    cluster.kubectl(
        "patch",
        "aspec",
        name,
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": patch}),
    )


def test_sample_becomes_ready_with_owned_children_and_gpu_pods(operator: Any, kube_cluster: Any) -> None:
    # the sample's claim, bound as a cluster's provisioner would bind it (this cluster has none)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "sample-llama-8b-data"},
        "spec": {
            "capacity": {"storage": "200Gi"},
            "accessModes": ["ReadWriteMany"],
            "hostPath": {"path": "/var/lib/adaspec-sample"},
            "claimRef": {"namespace": NS, "name": "llama-8b-data"},
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pv))
    kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "sample"))
    obj = wait_for(lambda: ready(kube_cluster, "llama-8b"), "sample speculator Ready", timeout=90)
    uid = obj["metadata"]["uid"]
    kids = children(kube_cluster, "llama-8b")
    assert [d["metadata"]["name"] for d in kids["deployments"]] == ["llama-8b-stable"]
    assert [s["metadata"]["name"] for s in kids["services"]] == ["llama-8b"]
    assert [p["metadata"]["name"] for p in kids["poddisruptionbudgets"]] == ["llama-8b"]
    assert [c["metadata"]["name"] for c in kids["configmaps"]] == ["llama-8b-controller"]
    for kind in CHILD_KINDS:
        for child in kids[kind]:
            (ref,) = child["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["uid"], ref["controller"]) == ("AdaptiveSpeculator", uid, True)
            assert child["metadata"]["labels"]["app.kubernetes.io/component"]
    (monitor,) = get_json(
        kube_cluster, "servicemonitors", "-n", NS, "-l", "app.kubernetes.io/instance=llama-8b"
    )["items"]
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == uid
    (dep,) = kids["deployments"]
    limits = dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    pods = wait_for(lambda: len(running_pods(kube_cluster, "llama-8b", "stable")) == 2, "2 running pods")
    assert pods
    for pod in running_pods(kube_cluster, "llama-8b", "stable"):
        node = get_json(kube_cluster, "node", pod["spec"]["nodeName"])
        assert int(node["status"]["allocatable"]["nvidia.com/gpu"]) >= 1
    finalizers = wait_for(
        lambda: get_json(kube_cluster, "aspec", "llama-8b", "-n", NS)["metadata"].get("finalizers"),
        "finalizer",
    )
    assert finalizers == ["adaspec.dev/operator"]
    st = obj["status"]
    assert st["stableRevision"] == "static" and st["readyReplicas"] == 2
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"Ready": "True", "Canary": "False", "Degraded": "False"}
    table = kube_cluster.kubectl("get", "aspec", "llama-8b", "-n", NS).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "STABLE", "CANARY", "ACCEPTANCE", "TOK/S", "AGE"]
    assert table[1].split()[:3] == ["llama-8b", "Ready", "static"]
    wait_for(
        lambda: any(e["reason"] == "Created" for e in events_of(kube_cluster, "llama-8b")), "Created events"
    )
    assert not [e for e in events_of(kube_cluster, "llama-8b") if e["reason"] == "Logging"]  # no log spam


def test_spec_update_rolls_pods_in_place(operator: Any, kube_cluster: Any) -> None:
    create_speculator(kube_cluster, "roll", runtime={"replicas": 1})
    wait_for(lambda: ready(kube_cluster, "roll"), "roll Ready", timeout=90)
    before = {p["metadata"]["name"] for p in running_pods(kube_cluster, "roll", "stable")}
    uid_before = get_json(kube_cluster, "deployment", "roll-stable", "-n", NS)["metadata"]["uid"]
    patch = {"spec": {"controller": {"maxLookahead": 12}, "runtime": {"image": "example.org/runtime:2"}}}
    kube_cluster.kubectl("patch", "aspec", "roll", "-n", NS, "--type=merge", "-p", json.dumps(patch))
    wait_for(lambda: ready(kube_cluster, "roll"), "roll Ready after the update", timeout=90)
    dep = get_json(kube_cluster, "deployment", "roll-stable", "-n", NS)
    assert dep["metadata"]["uid"] == uid_before  # updated in place, not replaced
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/runtime:2"
    cm = get_json(kube_cluster, "configmap", "roll-controller", "-n", NS)
    assert "maxLookahead: 12" in cm["data"]["controller.yaml"]
    after = wait_for(
        lambda: {p["metadata"]["name"] for p in running_pods(kube_cluster, "roll", "stable")} - before,
        "new pods",
    )
    assert after and not (after & before)


def test_scale_subresource_scales_the_stable_deployment(operator: Any, kube_cluster: Any) -> None:
    create_speculator(kube_cluster, "scaled")
    wait_for(lambda: ready(kube_cluster, "scaled"), "scaled Ready", timeout=90)
    kube_cluster.kubectl("scale", "aspec", "scaled", "-n", NS, "--replicas=3")
    obj = wait_for(
        lambda: (o := ready(kube_cluster, "scaled")) and o["status"]["readyReplicas"] == 3 and o,
        "3 ready replicas",
        timeout=90,
    )
    assert obj["spec"]["runtime"]["replicas"] == 3
    dep = get_json(kube_cluster, "deployment", "scaled-stable", "-n", NS)
    assert dep["spec"]["replicas"] == 3
    path = f"/apis/adaspec.dev/v1alpha1/namespaces/{NS}/adaptivespeculators/scaled/scale"
    scale = json.loads(kube_cluster.kubectl("get", "--raw", path).stdout)
    assert scale["status"]["replicas"] == 3 and "adaspec.dev/role=stable" in scale["status"]["selector"]


def test_canary_then_promotion(operator: Any, kube_cluster: Any) -> None:
    create_speculator(kube_cluster, "canary")
    wait_for(lambda: ready(kube_cluster, "canary"), "canary speculator Ready", timeout=90)
    revision = {
        "apiVersion": "adaspec.dev/v1alpha1",
        "kind": "SpeculatorRevision",
        "metadata": {"name": "canary-r1", "namespace": NS},
        "spec": {
            "speculator": "canary",
            "revision": "r1",
            "artifactUri": "s3://drafts/canary/r1",
            "sha256": "ab" * 32,
            "parentRevision": "static",
            "metrics": {"acceptance": 0.71},
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(revision))
    set_revision_phase(kube_cluster, "canary-r1", "Canary")
    set_status(kube_cluster, "canary", {"canaryRevision": "r1"})
    dep = wait_for(
        lambda: get_json(kube_cluster, "deployment", "canary-canary", "-n", NS), "canary Deployment"
    )
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--draft-revision=r1" in args and "--draft-artifact=s3://drafts/canary/r1" in args
    wait_for(lambda: status(kube_cluster, "canary").get("phase") == "Canary", "phase Canary")
    wait_for(lambda: running_pods(kube_cluster, "canary", "canary"), "a running canary pod")
    row = kube_cluster.kubectl("get", "aspec", "canary", "-n", NS, "--no-headers").stdout.split()
    assert row[1:4] == ["Canary", "static", "r1"]
    rev = wait_for(
        lambda: get_json(kube_cluster, "specrev", "canary-r1", "-n", NS)["metadata"].get("ownerReferences"),
        "revision owned by its speculator",
    )
    assert rev[0]["name"] == "canary"

    # Promote, as the control plane does: stable <- r1, canary removed.
    set_status(kube_cluster, "canary", {"stableRevision": "r1", "canaryRevision": None})
    wait_for(
        lambda: get_json(kube_cluster, "deployment", "canary-canary", "-n", NS) is None, "canary removed"
    )
    obj = wait_for(lambda: ready(kube_cluster, "canary"), "Ready on r1", timeout=90)
    assert obj["status"]["stableRevision"] == "r1"
    stable = get_json(kube_cluster, "deployment", "canary-stable", "-n", NS)
    assert "--draft-revision=r1" in stable["spec"]["template"]["spec"]["containers"][0]["args"]
    assert stable["spec"]["template"]["metadata"]["labels"]["adaspec.dev/revision"] == "r1"

    # A second canary is rejected through its revision's phase alone: its pods go at once.
    revision["metadata"]["name"], revision["spec"]["revision"] = "canary-r2", "r2"
    revision["spec"]["artifactUri"], revision["spec"]["parentRevision"] = "s3://drafts/canary/r2", "r1"
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(revision))
    set_status(kube_cluster, "canary", {"canaryRevision": "r2"})
    wait_for(
        lambda: get_json(kube_cluster, "deployment", "canary-canary", "-n", NS), "canary Deployment for r2"
    )
    set_revision_phase(kube_cluster, "canary-r2", "Rejected")
    wait_for(
        lambda: get_json(kube_cluster, "deployment", "canary-canary", "-n", NS) is None,
        "rejected canary gone",
    )
    set_status(kube_cluster, "canary", {"canaryRevision": None})

    # Roll back after promotion: stable goes back to the parent of r1.
    set_status(kube_cluster, "canary", {"stableRevision": "static"})
    set_revision_phase(kube_cluster, "canary-r1", "RolledBack")
    obj = wait_for(
        lambda: (o := ready(kube_cluster, "canary")) and o["status"]["stableRevision"] == "static" and o,
        "Ready on static after the rollback",
        timeout=90,
    )
    stable = get_json(kube_cluster, "deployment", "canary-stable", "-n", NS)
    assert "--draft-revision=static" in stable["spec"]["template"]["spec"]["containers"][0]["args"]


def set_revision_phase(cluster: Any, name: str, phase: str) -> None:
    patch = json.dumps({"status": {"phase": phase, "reason": f"test set {phase}"}})
    cluster.kubectl("patch", "specrev", name, "-n", NS, "--subresource=status", "--type=merge", "-p", patch)


def test_a_missing_revision_degrades_and_recovers(operator: Any, kube_cluster: Any) -> None:
    create_speculator(kube_cluster, "missing")
    wait_for(lambda: ready(kube_cluster, "missing"), "missing Ready", timeout=90)
    set_status(kube_cluster, "missing", {"canaryRevision": "r404"})
    wait_for(lambda: status(kube_cluster, "missing").get("phase") == "Degraded", "phase Degraded")
    wait_for(
        lambda: any(
            e["reason"] == "RevisionMissing" and e["type"] == "Warning"
            for e in events_of(kube_cluster, "missing")
        ),
        "a RevisionMissing warning event",
    )
    assert get_json(kube_cluster, "deployment", "missing-canary", "-n", NS) is None
    set_status(kube_cluster, "missing", {"canaryRevision": None})
    wait_for(lambda: ready(kube_cluster, "missing"), "Ready again", timeout=90)


def test_paused_stops_changes_and_pinned_revision_wins(operator: Any, kube_cluster: Any) -> None:
    create_speculator(kube_cluster, "pause")
    wait_for(lambda: ready(kube_cluster, "pause"), "pause Ready", timeout=90)
    patch = {"spec": {"paused": True, "runtime": {"image": "example.org/runtime:paused"}}}
    kube_cluster.kubectl("patch", "aspec", "pause", "-n", NS, "--type=merge", "-p", json.dumps(patch))
    wait_for(lambda: status(kube_cluster, "pause").get("phase") == "Paused", "phase Paused")
    dep = get_json(kube_cluster, "deployment", "pause-stable", "-n", NS)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] != "example.org/runtime:paused"
    set_status(kube_cluster, "pause", {"canaryRevision": "r9"})
    kube_cluster.kubectl(
        "patch",
        "aspec",
        "pause",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec": {"paused": false, "pinnedRevision": "static"}}',
    )
    wait_for(lambda: ready(kube_cluster, "pause"), "Ready after unpausing", timeout=90)
    dep = get_json(kube_cluster, "deployment", "pause-stable", "-n", NS)
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "example.org/runtime:paused"
    assert get_json(kube_cluster, "deployment", "pause-canary", "-n", NS) is None  # pinned: no canary


def test_restart_creates_no_duplicates_and_resumes(operator: Any, kube_cluster: Any) -> None:
    create_speculator(kube_cluster, "restart-a")
    wait_for(lambda: ready(kube_cluster, "restart-a"), "restart-a Ready", timeout=90)
    operator.stop()
    create_speculator(kube_cluster, "restart-b")  # created while no operator runs
    kube_cluster.kubectl(
        "patch",
        "aspec",
        "restart-a",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"spec": {"runtime": {"replicas": 2}}}',
    )
    operator.start()
    wait_for(lambda: ready(kube_cluster, "restart-b"), "restart-b Ready after restart", timeout=90)
    obj = wait_for(lambda: ready(kube_cluster, "restart-a"), "restart-a Ready after restart", timeout=90)
    assert obj["status"]["readyReplicas"] == 2
    for name in ("restart-a", "restart-b"):
        kids = children(kube_cluster, name)
        assert {k: len(v) for k, v in kids.items()} == dict.fromkeys(CHILD_KINDS, 1), name


def test_delete_removes_all_children(operator: Any, kube_cluster: Any) -> None:
    create_speculator(kube_cluster, "gone")
    wait_for(lambda: ready(kube_cluster, "gone"), "gone Ready", timeout=90)
    kube_cluster.kubectl("delete", "aspec", "gone", "-n", NS, "--wait=true")
    wait_for(
        lambda: not any(children(kube_cluster, "gone").values()), "children garbage-collected", timeout=90
    )
    sel = "app.kubernetes.io/instance=gone"
    wait_for(
        lambda: not get_json(kube_cluster, "pods", "-n", NS, "-l", sel)["items"], "pods gone", timeout=90
    )


def test_runtime_pods_pass_restricted_pod_security(operator: Any, kube_cluster: Any) -> None:
    ns = "restricted"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    }
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    body = {
        "apiVersion": "adaspec.dev/v1alpha1",
        "kind": "AdaptiveSpeculator",
        "metadata": {"name": "locked", "namespace": ns},
        "spec": {"targetModel": {"uri": "hf://org/target"}},
    }
    kube_cluster.kubectl("apply", "-f", "-", stdin=json.dumps(body))

    def running() -> bool:
        pods = get_json(kube_cluster, "pods", "-n", ns, "-l", "app.kubernetes.io/instance=locked")["items"]
        return any(p["status"].get("phase") == "Running" for p in pods)

    wait_for(running, "a runtime pod admitted under the restricted Pod Security Standard", timeout=90)


def test_peering_keeps_one_of_two_operators_active(operator: Any, kube_cluster: Any, tmp_path: Path) -> None:
    # kopf starts paused until it has read the peering object; let the first operator become active first
    # (when this test runs alone the module's operator has only just started).
    wait_for(lambda: "Resuming operations" in operator.tail(100000), "the first operator active")
    second = type(operator)(operator.env, tmp_path / "second.log", ("--priority=100",))
    second.start()
    try:
        wait_for(
            lambda: "Pausing operations in favour of" in operator.tail(100000), "the first operator paused"
        )
        resumed = operator.tail(100000).count("Resuming operations")
        create_speculator(kube_cluster, "peered")
        wait_for(
            lambda: ready(kube_cluster, "peered"), "peered Ready while the first operator waits", timeout=90
        )
        # Log lines about an object carry its [namespace/name]. Ready can be patched (by the Deployment's
        # handler) a moment before the speculator's own handler logs, so wait for the line; the waiting
        # operator must have handled nothing of it.
        wait_for(lambda: f"[{NS}/peered]" in second.tail(100000), "the active operator's log of peered")
        assert f"[{NS}/peered]" not in operator.tail(100000)
    finally:
        second.stop()
        if os.environ.get("ADASPEC_E2E_SHOW_LOG"):
            print(second.tail(200))
    wait_for(
        lambda: operator.tail(100000).count("Resuming operations") > resumed,
        "the first operator active again",
        timeout=90,
    )


def test_operator_log_has_no_permission_errors(operator: Any) -> None:
    log = operator.tail(100000)
    assert "Forbidden" not in log and "forbidden" not in log, operator.tail()
