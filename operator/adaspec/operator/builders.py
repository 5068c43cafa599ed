"""Pure builders of an AdaptiveSpeculator's child objects (plain dicts, ready for server-side apply)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from adaspec.operator.models import GROUP, VERSION, AdaptiveSpeculatorSpec, Resources
from adaspec.runtime.server.locations import STORAGE_ROOT_ENV
from adaspec.runtime.settings import duration_seconds

Role = Literal["stable", "canary"]

NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
ROLE_LABEL = "adaspec.dev/role"
REVISION_LABEL = "adaspec.dev/revision"
CONFIG_HASH_ANNOTATION = "adaspec.dev/config-hash"

STATIC_REVISION = "static"  # id of the revision built from spec.staticDraft (no SpeculatorRevision object)
API_PORT = 8000
METRICS_PORT = 9090
RUNTIME_UID = 10001
CONFIG_DIR = "/etc/adaspec"
STORAGE_DIR = "/var/lib/adaspec"  # spec.storage.claimName: capture/<pod>/ and revisions/ (docs/CONTRACTS.md)
CAPTURE_SUBDIR = "capture"
REVISIONS_SUBDIR = "revisions"
CONFIG_FILE = "controller.yaml"
HEALTH_PATH = "/health"  # 503 while loading or draining, 200 when ready (docs/CONTRACTS.md, runtime process)
STARTUP_PERIOD_S = 10
# Covers `adaspec serve --shutdown-grace` (default 20 s: in-flight requests finish) plus the time the
# endpoints controller takes to drop a terminating pod; a test checks it against the serve parser's default.
TERMINATION_GRACE_S = 30


@dataclass(frozen=True)
class Owner:
    """What the builders need to know about the owning AdaptiveSpeculator."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Owner:
        """Return the owner described by a custom resource body."""
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


@dataclass(frozen=True)
class Artifact:
    """A draft revision as the runtime loads it."""

    revision: str
    uri: str
    sha256: str = ""
    phase: str = ""  # the SpeculatorRevision's status.phase (empty for `static`)


def labels(owner: Owner, component: str) -> dict[str, str]:
    """Return the labels every child carries."""
    return {
        NAME_LABEL: "adaspec",
        INSTANCE_LABEL: owner.name,
        COMPONENT_LABEL: component,
        MANAGED_BY_LABEL: "adaspec-operator",
    }


def runtime_selector(owner: Owner) -> dict[str, str]:
    """Return the labels selecting all runtime pods (stable and canary) of a speculator."""
    return {NAME_LABEL: "adaspec", INSTANCE_LABEL: owner.name, COMPONENT_LABEL: "runtime"}


def role_selector(owner: Owner, role: Role) -> dict[str, str]:
    """Return the (immutable) selector of one Deployment's pods."""
    return {**runtime_selector(owner), ROLE_LABEL: role}


def selector_string(selector: Mapping[str, str]) -> str:
    """Return a label selector in the `k=v,k=v` form (for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def owner_reference(owner: Owner) -> dict[str, Any]:
    """Return the controller owner reference that makes a child garbage-collected with its speculator."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AdaptiveSpeculator",
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(owner: Owner, name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component),
        "ownerReferences": [owner_reference(owner)],
    }


def deployment_name(owner: Owner, role: Role) -> str:
    """Return the name of the stable or canary Deployment."""
    return f"{owner.name}-{role}"


def config_name(owner: Owner) -> str:
    """Return the name of the controller-settings ConfigMap."""
    return f"{owner.name}-controller"


def controller_config(spec: AdaptiveSpeculatorSpec) -> dict[str, Any]:
    """Return the runtime settings written to the ConfigMap (controller, adaptive, capture)."""
    return {
        "controller": spec.controller.model_dump(by_alias=True),
        "adaptive": spec.adaptive.model_dump(by_alias=True),
        "capture": spec.capture.model_dump(by_alias=True),
    }


def build_configmap(owner: Owner, spec: AdaptiveSpeculatorSpec) -> dict[str, Any]:
    """Return the ConfigMap holding the controller settings the runtime reads."""
    text = yaml.safe_dump(controller_config(spec), sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(owner, config_name(owner), "controller-config"),
        "data": {CONFIG_FILE: text},
    }


def config_hash(configmap: Mapping[str, Any]) -> str:
    """Return a short hash of a ConfigMap's data; a change rolls the pods that mount it."""
    return hashlib.sha256(json.dumps(configmap["data"], sort_keys=True).encode()).hexdigest()[:16]


def _quantities(values: Mapping[str, int | str]) -> dict[str, str]:
    return {k: str(v) for k, v in sorted(values.items())}


def resource_requirements(resources: Resources) -> dict[str, dict[str, str]]:
    """Return a container's `resources` from the spec's limits and requests."""
    out: dict[str, dict[str, str]] = {}
    if resources.limits:
        out["limits"] = _quantities(resources.limits)
    if resources.requests:
        out["requests"] = _quantities(resources.requests)
    return out


def startup_failure_threshold(spec: AdaptiveSpeculatorSpec) -> int:
    """Return the startup probe's failureThreshold: enough STARTUP_PERIOD_S periods to cover
    `spec.runtime.startupTimeout` (at least one)."""
    return max(1, math.ceil(duration_seconds(spec.runtime.startup_timeout) / STARTUP_PERIOD_S))


def probes(spec: AdaptiveSpeculatorSpec) -> dict[str, Any]:
    """Return the runtime container's probes: startup and readiness on /health, and no liveness probe.

    Loading (model download, checksum verification, cost calibration) can take minutes, during which
    /health answers 503; the startup probe allows `runtime.startupTimeout` for it, then readiness takes
    over. There is deliberately no liveness probe: after SIGTERM the runtime drains with /health at 503,
    and a liveness probe on /health would kill a pod finishing its in-flight requests.
    """
    health = {"path": HEALTH_PATH, "port": "http"}
    return {
        "startupProbe": {
            "httpGet": health,
            "periodSeconds": STARTUP_PERIOD_S,
            "failureThreshold": startup_failure_threshold(spec),
        },
        "readinessProbe": {"httpGet": health, "periodSeconds": 5},
    }


def runtime_args(spec: AdaptiveSpeculatorSpec, artifact: Artifact, role: Role) -> list[str]:
    """Return the runtime container's arguments (after the `adaspec` entrypoint)."""
    args = [
        "serve",
        "--host=0.0.0.0",
        f"--port={API_PORT}",
        f"--metrics-port={METRICS_PORT}",
        f"--engine={spec.runtime.engine}",
        f"--strategy={spec.runtime.strategy}",
        f"--target-model={spec.target_model.uri}",
    ]
    if spec.target_model.tokenizer:
        args.append(f"--tokenizer={spec.target_model.tokenizer}")
    if spec.static_draft.uri:
        args.append(f"--static-draft={spec.static_draft.uri}")
    args += [f"--draft-revision={artifact.revision}", f"--role={role}"]
    if artifact.uri:
        args.append(f"--draft-artifact={artifact.uri}")
    if artifact.sha256:
        args.append(f"--draft-sha256={artifact.sha256}")
    args.append(f"--controller-config={CONFIG_DIR}/{CONFIG_FILE}")
    if spec.storage.claim_name:
        # one directory per pod: shard names carry the pid, which is the same in every container
        args.append(f"--capture-dir={STORAGE_DIR}/{CAPTURE_SUBDIR}/$(POD_NAME)")
    return args


def container_security_context() -> dict[str, Any]:
    """Return the securityContext of adaspec's containers (runtime pods, adaptation Jobs)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security_context() -> dict[str, Any]:
    """Return the pod securityContext of adaspec's pods: uid 10001, the runtime's default seccomp."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def build_deployment(
    owner: Owner, spec: AdaptiveSpeculatorSpec, artifact: Artifact, role: Role, config_digest: str
) -> dict[str, Any]:
    """Return the stable or canary Deployment of runtime pods serving `artifact`."""
    replicas = spec.runtime.replicas if role == "stable" else spec.promotion.canary_replicas
    selector = role_selector(owner, role)
    pod_labels = {**labels(owner, "runtime"), ROLE_LABEL: role, REVISION_LABEL: artifact.revision}
    container: dict[str, Any] = {
        "name": "runtime",
        "image": spec.runtime.image,
        "command": ["adaspec"],
        "args": runtime_args(spec, artifact, role),
        "ports": [
            {"name": "http", "containerPort": API_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "HF_HOME", "value": "/var/cache/adaspec"},
            {"name": "ADASPEC_REVISION", "value": artifact.revision},
            {"name": "ADASPEC_ROLE", "value": role},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "resources": resource_requirements(spec.runtime.resources),
        **probes(spec),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": "/var/cache/adaspec"},
        ],
        "securityContext": container_security_context(),
    }
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security_context(),
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": config_name(owner)}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "cache", "emptyDir": {}},
        ],
    }
    if spec.storage.claim_name:
        container["env"].append({"name": STORAGE_ROOT_ENV, "value": STORAGE_DIR})  # storage:// locations
        container["volumeMounts"].append({"name": "storage", "mountPath": STORAGE_DIR})
        pod_spec["volumes"].append(
            {"name": "storage", "persistentVolumeClaim": {"claimName": spec.storage.claim_name}}
        )
    if spec.runtime.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(spec.runtime.node_selector.items()))
    if spec.runtime.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.runtime.tolerations
        ]
    meta = _metadata(owner, deployment_name(owner, role), "runtime")
    meta["labels"] = {**meta["labels"], ROLE_LABEL: role, REVISION_LABEL: artifact.revision}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {CONFIG_HASH_ANNOTATION: config_digest}},
                "spec": pod_spec,
            },
        },
    }


def build_service(owner: Owner) -> dict[str, Any]:
    """Return the Service in front of all runtime pods (API and metrics ports)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, owner.name, "runtime"),
        "spec": {
            "selector": runtime_selector(owner),
            "ports": [
                {"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def build_pdb(owner: Owner) -> dict[str, Any]:
    """Return the PodDisruptionBudget allowing one runtime pod down at a time."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, owner.name, "runtime"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": runtime_selector(owner)}},
    }


def build_servicemonitor(owner: Owner) -> dict[str, Any]:
    """Return the Prometheus operator ServiceMonitor scraping the runtime's metrics port."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(owner, owner.name, "metrics"),
        "spec": {
            "selector": {"matchLabels": labels(owner, "runtime")},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


@dataclass(frozen=True)
class Plan:
    """The children one speculator should have, and the Deployments it should not."""

    apply: tuple[dict[str, Any], ...]
    delete_deployments: tuple[str, ...]


def plan_children(
    owner: Owner,
    spec: AdaptiveSpeculatorSpec,
    stable: Artifact,
    canary: Artifact | None,
    *,
    servicemonitor: bool,
) -> Plan:
    """Return every child to apply (ConfigMap first, so pods find it) and Deployments to delete."""
    configmap = build_configmap(owner, spec)
    digest = config_hash(configmap)
    children = [configmap, build_deployment(owner, spec, stable, "stable", digest)]
    delete: tuple[str, ...] = ()
    if canary is not None:
        children.append(build_deployment(owner, spec, canary, "canary", digest))
    else:
        delete = (deployment_name(owner, "canary"),)
    children += [build_service(owner), build_pdb(owner)]
    if servicemonitor:
        children.append(build_servicemonitor(owner))
    return Plan(apply=tuple(children), delete_deployments=delete)
