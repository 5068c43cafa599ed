"""manifests/ applies with kubectl -k, CRDs explain themselves, and the RBAC of the operator and the control
plane is least privilege."""

from __future__ import annotations

from typing import Any

import pytest

SA = "system:serviceaccount:adaspec-system:adaspec-operator"

ALLOWED = [
    ("watch", "adaptivespeculators.adaspec.dev"),
    ("patch", "adaptivespeculators.adaspec.dev/status"),
    ("patch", "speculatorrevisions.adaspec.dev"),
    ("create", "deployments.apps"),
    ("patch", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("create", "services"),
    ("create", "configmaps"),
    ("create", "poddisruptionbudgets.policy"),
    ("create", "servicemonitors.monitoring.coreos.com"),
    ("create", "events"),
    ("patch", "clusterkopfpeerings.kopf.dev"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
]
DENIED = [
    ("get", "secrets"),
    ("create", "pods"),
    ("delete", "services"),
    ("delete", "adaptivespeculators.adaspec.dev"),
    ("create", "adaptivespeculators.adaspec.dev"),
    ("delete", "speculatorrevisions.adaspec.dev"),
    ("update", "nodes"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io"),
    ("create", "jobs.batch"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
]


def can_i(cluster: Any, account: str, verb: str, resource: str) -> str:
    """`kubectl auth can-i` as `account`; "x/status" asks about the subresource (not an object named so)."""
    kind, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, kind, "--as", account, "-n", "default"]
    proc = cluster.kubectl(*args, *([f"--subresource={sub}"] if sub else []), check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), (verb, resource, proc.stderr)
    return answer


CONTROL_PLANE = "system:serviceaccount:adaspec-system:adaspec-control-plane"
CONTROL_PLANE_ALLOWED = [
    ("list", "adaptivespeculators.adaspec.dev"),  # the fleet comes from the cluster
    ("watch", "adaptivespeculators.adaspec.dev"),
    ("list", "pods"),  # each runtime pod scraped at its own IP
    ("get", "speculatorrevisions.adaspec.dev"),  # a run's parent artifact
    ("create", "speculatorrevisions.adaspec.dev"),
    ("patch", "speculatorrevisions.adaspec.dev/status"),
    ("patch", "adaptivespeculators.adaspec.dev/status"),
    ("get", "adaptivespeculators.adaspec.dev/status"),
    ("create", "jobs.batch"),
    ("get", "jobs.batch"),
    ("create", "tokenreviews.authentication.k8s.io"),
]
CONTROL_PLANE_DENIED = [
    ("patch", "adaptivespeculators.adaspec.dev"),  # status only: the spec is the user's
    ("delete", "speculatorrevisions.adaspec.dev"),
    ("delete", "jobs.batch"),
    ("delete", "pods"),
    ("update", "adaptivespeculators.adaspec.dev"),
    ("get", "secrets"),
    ("create", "pods"),
    ("create", "deployments.apps"),
    ("create", "rolebindings.rbac.authorization.k8s.io"),
]


@pytest.mark.parametrize(
    ("account", "verb", "resource", "answer"),
    [(CONTROL_PLANE, v, r, "yes") for v, r in CONTROL_PLANE_ALLOWED]
    + [(CONTROL_PLANE, v, r, "no") for v, r in CONTROL_PLANE_DENIED],
)
def test_control_plane_rbac_is_least_privilege(
    installed: Any, account: str, verb: str, resource: str, answer: str
) -> None:
    assert can_i(installed, account, verb, resource) == answer


@pytest.mark.parametrize(("verb", "resource"), ALLOWED)
def test_operator_can_do_what_it_needs(installed: Any, verb: str, resource: str) -> None:
    assert can_i(installed, SA, verb, resource) == "yes"


@pytest.mark.parametrize(("verb", "resource"), DENIED)
def test_operator_cannot_do_more(installed: Any, verb: str, resource: str) -> None:
    assert can_i(installed, SA, verb, resource) == "no"


def test_crds_are_served_with_short_names_and_explain(installed: Any) -> None:
    resources = installed.kubectl("api-resources", "--api-group=adaspec.dev", "-o", "wide").stdout
    assert "aspec" in resources and "specrev" in resources
    explained = installed.kubectl("explain", "aspec.spec.controller").stdout
    assert "minLookahead" in explained and "Fewest tokens drafted whenever a speculator" in explained


@pytest.mark.parametrize("name", ["adaspec-operator", "adaspec-control-plane"])
def test_deployments_are_locked_down(installed: Any, name: str) -> None:
    import json

    dep = json.loads(
        installed.kubectl("get", "deployment", name, "-n", "adaspec-system", "-o", "json").stdout
    )
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert set(c["resources"]["limits"]) == {"cpu", "memory"}


def test_operator_pod_is_admitted_in_the_restricted_namespace(installed: Any) -> None:
    import time

    sel = "app.kubernetes.io/component=operator"
    deadline = time.monotonic() + 60
    phases: list[str] = []
    while time.monotonic() < deadline:
        out = installed.kubectl(
            "get", "pods", "-n", "adaspec-system", "-l", sel, "-o", "jsonpath={.items[*].status.phase}"
        )
        phases = out.stdout.split()
        if phases == ["Running", "Running"]:  # two replicas, active/passive through peering
            return
        time.sleep(0.5)
    pytest.fail(f"operator pod not Running under Pod Security 'restricted': {phases}")
