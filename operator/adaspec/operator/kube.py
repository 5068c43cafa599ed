"""Thin Kubernetes API access for the operator: server-side apply, get and delete of plain-dict objects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

FIELD_MANAGER = "adaspec-operator"

# kind -> (API path prefix, plural) for every kind the operator writes.
RESOURCES: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "ServiceMonitor": ("/apis/monitoring.coreos.com/v1", "servicemonitors"),
    "AdaptiveSpeculator": ("/apis/adaspec.dev/v1alpha1", "adaptivespeculators"),
    "SpeculatorRevision": ("/apis/adaspec.dev/v1alpha1", "speculatorrevisions"),
}

ApplyResult = Literal["created", "updated", "unchanged"]


def object_path(kind: str, namespace: str, name: str, subresource: str = "") -> str:
    """Return the API path of a namespaced object of a known kind."""
    prefix, plural = RESOURCES[kind]
    path = f"{prefix}/namespaces/{namespace}/{plural}/{name}"
    return f"{path}/{subresource}" if subresource else path


@dataclass
class Kube:
    """A kubernetes.client.ApiClient with the few calls the operator makes."""

    api: Any  # kubernetes.client.ApiClient

    @classmethod
    def from_environment(cls) -> Kube:
        """Return a client configured in-cluster or from KUBECONFIG / ~/.kube/config."""
        import kubernetes

        try:
            kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()  # type: ignore[no-untyped-call]
        return cls(kubernetes.client.ApiClient())

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Make one request; return the decoded JSON body or raise kubernetes' ApiException."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if not hasattr(self.api, "param_serialize"):  # kubernetes < 35: the older generated client
            return self.api.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        response.read()
        if response.status >= 400:
            raise ApiException(http_resp=response)
        return json.loads(response.data) if response.data else None

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Return the object, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            result: dict[str, Any] = self._call("GET", object_path(kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def apply(self, obj: Mapping[str, Any]) -> ApplyResult:
        """Server-side apply `obj` (the operator owns the fields it sets); return what happened."""
        meta = obj["metadata"]
        before = self.get(obj["kind"], meta["namespace"], meta["name"])
        after = self._call(
            "PATCH",
            object_path(obj["kind"], meta["namespace"], meta["name"]),
            body=dict(obj),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        if before is None:
            return "created"
        same = before["metadata"]["resourceVersion"] == after["metadata"]["resourceVersion"]
        return "unchanged" if same else "updated"

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object (children in the background); return False when it did not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._call("DELETE", object_path(kind, namespace, name), body={"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def patch_status(
        self, kind: str, namespace: str, name: str, status: Mapping[str, Any], resource_version: str = ""
    ) -> bool:
        """Merge-patch the status subresource; return False when `resource_version` is no longer current.

        With a resource version the patch applies only to the object as it was read, so a status computed
        from a stale read never overwrites what another writer (the control plane) has just set.
        """
        from kubernetes.client.exceptions import ApiException

        body: dict[str, Any] = {"status": dict(status)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            self._call(
                "PATCH",
                object_path(kind, namespace, name, "status"),
                body=body,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def patch(self, kind: str, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        """Merge-patch the object."""
        self._call(
            "PATCH",
            object_path(kind, namespace, name),
            body=dict(patch),
            content_type="application/merge-patch+json",
        )

    def has_api_group(self, group_version: str) -> bool:
        """Return True when the API server serves `group/version` (discovery needs no RBAC)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._call("GET", f"/apis/{group_version}")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
