"""The fleet from the cluster: AdaptiveSpeculator objects become speculators, their pods scrape targets.

Pure functions (tested field by field against the CRD without a cluster) and one small reader.

- `speculator_from_cr`: an AdaptiveSpeculator -> the control plane's `SpeculatorConfig`, its policies taken
  from `spec.adaptation`, `spec.promotion` and `spec.rollback` over the fleet's defaults (the settings'
  `policies`, which also fill every knob the CRD has no field for). The API server defaults every CR field, so
  a mapped field always comes from the CR.
- `pod_endpoints`: the speculator's runtime pods (selected by the labels the operator sets) -> one metrics
  URL per ready pod, at its own IP: a Service VIP would load-balance scrapes across pods, and per-target
  counter deltas would then mix pods and look like resets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from adaspec.operator.builders import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    METRICS_PORT,
    NAME_LABEL,
    ROLE_LABEL,
)
from adaspec.operator.models import AdaptiveSpeculatorSpec
from adaspec.runtime.settings import duration_seconds

from .config import Endpoint, Policies, SpeculatorConfig

log = logging.getLogger("adaspec.controlplane.discovery")
GROUP, VERSION, PLURAL = "adaspec.dev", "v1alpha1", "adaptivespeculators"


@dataclass(frozen=True)
class Discovered:
    """One AdaptiveSpeculator as the control plane manages it."""

    config: SpeculatorConfig
    spec: AdaptiveSpeculatorSpec
    # why no action may be taken now (`spec.paused`, `spec.pinnedRevision`), or "" when actions may be
    hold: str = ""


def policies_from_cr(spec: AdaptiveSpeculatorSpec, fleet: Policies) -> Policies:
    """Return the fleet's policies with the CR's fields in place (one mapping, see the table in
    docs/CONTRACTS.md "Control plane and AdaptiveSpeculator")."""
    a, p, r = spec.adaptation, spec.promotion, spec.rollback
    return Policies(
        drift=fleet.drift.model_copy(
            update={"threshold": a.drift_threshold, "max_window_s": duration_seconds(a.drift_window)}
        ),
        adaptation=fleet.adaptation.model_copy(update={"cooldown_s": duration_seconds(a.cooldown)}),
        canary=fleet.canary.model_copy(
            update={
                "interval_s": duration_seconds(p.analysis_interval),
                "min_draft_tokens": p.min_samples,
                "success_acceptance_delta": p.min_improvement,
                # the CRD counts the failures that reject; the policy counts those tolerated
                "failure_limit": p.failure_limit - 1,
            }
        ),
        guard=fleet.guard.model_copy(
            update={"max_drop": r.max_acceptance_drop, "window_s": duration_seconds(r.guard_window)}
        ),
    )


def speculator_from_cr(obj: Mapping[str, Any], fleet: Policies) -> Discovered:
    """Return the speculator an AdaptiveSpeculator object describes; ValueError names what is wrong."""
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "default")
    try:
        spec = AdaptiveSpeculatorSpec.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"AdaptiveSpeculator {namespace}/{name}: spec.{where}: {first['msg']}") from None
    hold = ""
    if spec.pinned_revision:
        hold = f"spec.pinnedRevision is {spec.pinned_revision}"
    elif spec.paused:
        hold = "spec.paused is true"
    config = SpeculatorConfig(
        name=name,
        namespace=namespace,
        source="pods",
        schedule=spec.adaptation.schedule,
        policies=policies_from_cr(spec, fleet),
    )
    return Discovered(config=config, spec=spec, hold=hold)


def pod_selector(name: str) -> str:
    """Return the label selector of a speculator's runtime pods (stable and canary), as the operator sets."""
    return f"{NAME_LABEL}=adaspec,{INSTANCE_LABEL}={name},{COMPONENT_LABEL}=runtime"


def _ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp") or status.get("phase") != "Running":
        return False
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _metrics_port(pod: Mapping[str, Any]) -> int:
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == "metrics":
                return int(port["containerPort"])
    return METRICS_PORT


def pod_endpoints(pods: Iterable[Mapping[str, Any]]) -> list[Endpoint]:
    """Return one metrics endpoint per ready pod with an IP (the pod's uid names its series: a new pod is
    a new series even at a reused IP; a pod gone is a series ended)."""
    out = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or not _ready(pod):
            continue
        meta = pod.get("metadata") or {}
        role = (meta.get("labels") or {}).get(ROLE_LABEL)
        host = f"[{ip}]" if ":" in ip else ip
        out.append(
            Endpoint(
                url=f"http://{host}:{_metrics_port(pod)}/metrics",
                role="canary" if role == "canary" else "stable",
                pod=f"{meta.get('name')}/{meta.get('uid')}",
            )
        )
    return sorted(out, key=lambda e: e.key)


class ClusterFleet:
    """Reads AdaptiveSpeculators and their pods through the Kubernetes API (in-cluster or kubeconfig).

    `namespaces` empty: cluster-wide (needs the ClusterRole); else only those namespaces.
    """

    def __init__(self, namespaces: Iterable[str] = (), api_client: Any | None = None) -> None:
        from kubernetes import client
        from kubernetes import config as kconfig

        if api_client is None:
            try:
                kconfig.load_incluster_config()  # type: ignore[no-untyped-call]
            except kconfig.ConfigException:
                kconfig.load_kube_config()  # type: ignore[no-untyped-call]
        self._namespaces = tuple(namespaces)
        self._custom: Any = client.CustomObjectsApi(api_client)
        self._core: Any = client.CoreV1Api(api_client)
        self._api: Any = client.ApiClient() if api_client is None else api_client

    def speculators(self, fleet: Policies) -> list[Discovered]:
        """Return every AdaptiveSpeculator that parses (a bad one is logged and left out)."""
        if self._namespaces:
            items = [
                item
                for ns in self._namespaces
                for item in self._custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
            ]
        else:
            items = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        out = []
        for item in items:
            try:
                out.append(speculator_from_cr(item, fleet))
            except ValueError as exc:
                log.warning("event=speculator_skipped error=%s", exc)
        return out

    def endpoints(self, name: str, namespace: str) -> list[Endpoint]:
        """Return the metrics endpoints of a speculator's ready runtime pods."""
        pods = self._core.list_namespaced_pod(namespace, label_selector=pod_selector(name))
        return pod_endpoints(self._api.sanitize_for_serialization(p) for p in pods.items)
