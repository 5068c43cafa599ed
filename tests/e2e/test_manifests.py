"""manifests/ applies with kubectl -k, CRDs explain themselves, and the operator's RBAC is least privilege."""

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


@pytest.mark.parametrize(("verb", "resource"), ALLOWED)
def test_operator_can_do_what_it_needs(installed: Any, verb: str, resource: str) -> None:
    proc = installed.kubectl("auth", "can-i", verb, resource, "--as", SA, "-n", "default", check=False)
    assert proc.stdout.strip() == "yes", (verb, resource, proc.stderr)


@pytest.mark.parametrize(("verb", "resource"), DENIED)
def test_operator_cannot_do_more(installed: Any, verb: str, resource: str) -> None:
    proc = installed.kubectl("auth", "can-i", verb, resource, "--as", SA, "-n", "default", check=False)
    assert proc.stdout.strip() == "no", (verb, resource, proc.stderr)


def test_crds_are_served_with_short_names_and_explain(installed: Any) -> None:
    resources = installed.kubectl("api-resources", "--api-group=adaspec.dev", "-o", "wide").stdout
    assert "aspec" in resources and "specrev" in resources
    explained = installed.kubectl("explain", "aspec.spec.controller").stdout
    assert "minLookahead" in explained and "Fewest tokens drafted per step" in explained


def test_operator_deployment_is_locked_down(installed: Any) -> None:
    import json

    dep = json.loads(
        installed.kubectl(
            "get", "deployment", "adaspec-operator", "-n", "adaspec-system", "-o", "json"
        ).stdout
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
