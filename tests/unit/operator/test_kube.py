"""Kube sends server-side apply and merge patches with the right paths, parameters and content types."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from adaspec.operator.kube import FIELD_MANAGER, Kube, object_path


class Response:
    def __init__(self, status: int, data: Any) -> None:
        self.status, self.reason, self.headers = status, "x", {}
        self.data = json.dumps(data).encode() if data is not None else b""

    def read(self) -> bytes:
        return self.data


class FakeApiClient:
    """Records what the generated client (kubernetes >= 35) would send, answers from a queue."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def param_serialize(self, **kw: Any) -> tuple[Any, ...]:
        self.requests.append(kw)
        return (kw["method"], kw["resource_path"], kw["header_params"], kw["body"], [])

    def call_api(self, *request: Any) -> Response:
        status, data = self.answers.pop(0)
        return Response(status, data)


def test_paths_of_namespaced_objects() -> None:
    assert object_path("Deployment", "ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
    assert object_path("ConfigMap", "ns", "c") == "/api/v1/namespaces/ns/configmaps/c"
    assert (
        object_path("AdaptiveSpeculator", "ns", "a", "status")
        == "/apis/adaspec.dev/v1alpha1/namespaces/ns/adaptivespeculators/a/status"
    )


def test_apply_is_a_forced_server_side_apply_and_reports_creation() -> None:
    api = FakeApiClient((404, {"kind": "Status"}), (200, {"metadata": {"resourceVersion": "1"}}))
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}}
    assert Kube(api).apply(obj) == "created"
    get, patch = api.requests
    assert get["method"] == "GET"
    assert patch["method"] == "PATCH" and patch["body"] == obj
    assert patch["header_params"]["Content-Type"] == "application/apply-patch+yaml"
    assert ("fieldManager", FIELD_MANAGER) in patch["query_params"] and ("force", "true") in patch[
        "query_params"
    ]


@pytest.mark.parametrize(("before", "after", "result"), [("1", "1", "unchanged"), ("1", "2", "updated")])
def test_apply_compares_resource_versions(before: str, after: str, result: str) -> None:
    api = FakeApiClient(
        (200, {"metadata": {"resourceVersion": before}}), (200, {"metadata": {"resourceVersion": after}})
    )
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"}}
    assert Kube(api).apply(obj) == result


def test_status_patch_is_a_merge_patch_on_the_subresource() -> None:
    api = FakeApiClient((200, {}))
    Kube(api).patch_status("AdaptiveSpeculator", "ns", "a", {"canaryRevision": None})
    (req,) = api.requests
    assert req["resource_path"].endswith("/adaptivespeculators/a/status")
    assert req["header_params"]["Content-Type"] == "application/merge-patch+json"
    assert req["body"] == {"status": {"canaryRevision": None}}


def test_missing_objects_are_none_and_other_errors_raise() -> None:
    assert Kube(FakeApiClient((404, {}))).get("Deployment", "ns", "d") is None
    assert Kube(FakeApiClient((404, {}))).delete("Deployment", "ns", "d") is False
    with pytest.raises(ApiException) as exc:
        Kube(FakeApiClient((403, {"reason": "Forbidden"}))).get("Deployment", "ns", "d")
    assert exc.value.status == 403


def test_status_patch_with_a_stale_resource_version_reports_conflict() -> None:
    api = FakeApiClient((409, {"reason": "Conflict"}))
    assert Kube(api).patch_status("AdaptiveSpeculator", "ns", "a", {"phase": "Ready"}, "41") is False
    assert api.requests[0]["body"]["metadata"] == {"resourceVersion": "41"}
