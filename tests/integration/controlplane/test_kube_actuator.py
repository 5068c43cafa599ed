"""The Kubernetes actuator against a real API server (the `kube_cluster` fixture) with adaspec's CRDs.

Each test runs as the cluster admin and as the control plane's own ServiceAccount from
manifests/controlplane.yaml, so that its least-privilege RBAC is exercised by use.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adaspec.controlplane.actuators import PermanentActionError
from adaspec.controlplane.config import KubernetesActuatorConfig, Policies
from adaspec.controlplane.discovery import ClusterFleet
from adaspec.controlplane.kube import KubernetesActuator, adapting_patch

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
IDENTITIES = ("admin", "control-plane-service-account")


@pytest.fixture(scope="module")
def cluster(kube_cluster: Any) -> Any:
    kube_cluster.kubectl("apply", "-k", str(CRDS))
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/adaptivespeculators.adaspec.dev", "--timeout=60s"
    )
    kube_cluster.kubectl(
        "wait", "--for=condition=Established", "crd/speculatorrevisions.adaspec.dev", "--timeout=60s"
    )
    for manifest in ("namespace.yaml", "controlplane.yaml"):
        kube_cluster.kubectl("apply", "-f", str(ROOT / "manifests" / manifest))
    return kube_cluster


def api_client(cluster: Any, identity: str) -> Any:
    from kubernetes import config

    if identity == "admin":
        return config.new_client_from_config(config_file=str(cluster.kubeconfig))
    path = cluster.service_account_kubeconfig("adaspec-control-plane")
    return config.new_client_from_config(config_file=str(path))


def get(cluster: Any, kind: str, ns: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(cluster.kubectl("get", kind, name, "-n", ns, "-o", "json").stdout)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("identity", IDENTITIES)
def test_canary_promote_rollback_through_the_api_server(cluster: Any, identity: str) -> None:
    from kubernetes import client, config

    ns = f"cp-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    aspec = {
        "apiVersion": "adaspec.dev/v1alpha1",
        "kind": "AdaptiveSpeculator",
        "metadata": {"name": "chat", "namespace": ns},
        "spec": {
            "targetModel": {"uri": "hf://org/model"},
            "staticDraft": {"uri": "file:///models/draft"},
            "runtime": {"image": "adaspec:test"},
            "storage": {"claimName": "fleet-data"},
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(aspec))
    admin = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    client.CustomObjectsApi(admin).patch_namespaced_custom_object_status(
        "adaspec.dev", "v1alpha1", ns, "adaptivespeculators", "chat", {"status": {"stableRevision": "r0"}}
    )
    api = api_client(cluster, identity)
    act = KubernetesActuator(KubernetesActuatorConfig(), api_client=api)

    act.start_adaptation("chat", ns, "chat-run1", "static")
    act.start_adaptation("chat", ns, "chat-run1", "static")  # retried action: no error, one Job
    job = get(cluster, "job", ns, "adapt-chat-run1")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "adaspec:test"  # the CR's runtime image
    assert "--parent-artifact=file:///models/draft" in container["args"]  # the CR's static draft
    assert job["metadata"]["ownerReferences"][0]["name"] == "chat"
    # a parent with no SpeculatorRevision cannot be adapted from: refused for good, not retried
    with pytest.raises(PermanentActionError, match="chat-r9"):
        act.start_adaptation("chat", ns, "chat-run2", "r9")
    assert act.poll_adaptation("chat", ns, "chat-run1").status == "running"
    conditions = {c["type"]: c for c in get(cluster, "aspec", ns, "chat")["status"]["conditions"]}
    adapting = conditions["Adapting"]
    assert (adapting["status"], adapting["reason"]) == ("True", "AdaptationRunning")
    # The condition is written with the resourceVersion it was read at: a stale one is refused (409).
    stale = get(cluster, "aspec", ns, "chat")
    client.CustomObjectsApi(admin).patch_namespaced_custom_object_status(
        "adaspec.dev", "v1alpha1", ns, "adaptivespeculators", "chat", {"status": {"tokensPerSecond": 1.0}}
    )
    patch = adapting_patch(stale, "failed", "late", datetime.now(UTC))
    with pytest.raises(client.ApiException) as refused:
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            "adaspec.dev", "v1alpha1", ns, "adaptivespeculators", "chat", patch
        )
    assert refused.value.status == 409

    # a candidate without an artifact is invalid for the CRD (422): failed for good, not retried forever
    with pytest.raises(PermanentActionError, match="422"):
        act.start_canary("chat", ns, "r-bad", None, "r0")
    act.start_canary("chat", ns, "r1", "s3://bucket/chat/r1", "r0")
    act.start_canary("chat", ns, "r1", "s3://bucket/chat/r1", "r0")
    status = get(cluster, "aspec", ns, "chat")["status"]
    assert (status["stableRevision"], status["canaryRevision"]) == ("r0", "r1")
    rev = get(cluster, "specrev", ns, "chat-r1")
    assert rev["spec"]["parentRevision"] == "r0" and rev["status"]["phase"] == "Canary"

    act.promote("chat", ns, "r1", "s3://bucket/chat/r1", "r0")
    status = get(cluster, "aspec", ns, "chat")["status"]
    assert status["stableRevision"] == "r1" and "canaryRevision" not in status
    assert get(cluster, "specrev", ns, "chat-r1")["status"]["phase"] == "Promoted"

    act.report_status("chat", ns, {"acceptanceRate": 0.71, "tokensPerSecond": 812.5, "lastDriftTime": None})
    status = get(cluster, "aspec", ns, "chat")["status"]
    assert (status["acceptanceRate"], status["tokensPerSecond"]) == (0.71, 812.5)

    act.rollback("chat", ns, "r1", "r0", None, "regression after promotion")
    status = get(cluster, "aspec", ns, "chat")["status"]
    assert status["stableRevision"] == "r0"
    rolled = get(cluster, "specrev", ns, "chat-r1")["status"]
    assert rolled == {"phase": "RolledBack", "reason": "regression after promotion"}

    # discovery, with the same identity: the CR and its (here: no) pods
    fleet = ClusterFleet([ns], api_client=api)
    (found,) = fleet.speculators(Policies())
    assert (found.config.name, found.config.namespace, found.spec.storage.claim_name) == (
        "chat",
        ns,
        "fleet-data",
    )
    assert fleet.endpoints("chat", ns) == []
    assert "chat" in {d.config.name for d in ClusterFleet(api_client=api).speculators(Policies())}
    cluster.kubectl("delete", "namespace", ns, "--wait=false")


@pytest.mark.slow
@pytest.mark.parametrize("identity", IDENTITIES)
def test_token_review_against_the_api_server(cluster: Any, identity: str) -> None:
    from adaspec.controlplane.auth import Principal, TokenReview, kubernetes_review

    ns = f"cp-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("create", "serviceaccount", "ops", "-n", ns)
    ops = cluster.kubectl("create", "token", "ops", "-n", ns).stdout.strip()
    api = api_client(cluster, identity)
    auth = TokenReview(kubernetes_review(api), admin_groups=[f"system:serviceaccounts:{ns}"], read_groups=[])
    assert auth.authenticate(ops) == Principal(f"system:serviceaccount:{ns}:ops", "admin")
    assert auth.authenticate(ops[:-4] + "AAAA") is None
    other = TokenReview(kubernetes_review(api), admin_groups=[], read_groups=["system:serviceaccounts"])
    assert other.authenticate(ops) == Principal(f"system:serviceaccount:{ns}:ops", "read")
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
