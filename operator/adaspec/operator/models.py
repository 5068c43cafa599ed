"""Pydantic twins of the AdaptiveSpeculator and SpeculatorRevision CRDs (kept in agreement by a test).

`spec.controller`, `spec.adaptive` and `spec.capture` are the runtime's own settings models
(`adaspec.runtime.settings`), so the CRD, the ConfigMap and the runtime share one schema and one set of
defaults.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from adaspec.runtime.settings import (
    AdaptiveSettings,
    CaptureSettings,
    ControllerSettings,
    Duration,
)

GROUP = "adaspec.dev"
VERSION = "v1alpha1"
SPECULATORS = "adaptivespeculators"
REVISIONS = "speculatorrevisions"

_CRON_ITEM = r"(\*|\?|[0-9]{1,2}(-[0-9]{1,2})?|[A-Za-z]{3}(-[A-Za-z]{3})?)(/[0-9]{1,2})?"
_CRON_FIELD = rf"({_CRON_ITEM}(,{_CRON_ITEM})*)"
CRON = rf"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|{_CRON_FIELD}(\s+{_CRON_FIELD}){{4}})$"
QUANTITY = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)"
    r"|(\.[0-9]+))))?$"
)
GPU = "nvidia.com/gpu"

Quantity = Annotated[int | Annotated[str, Field(pattern=QUANTITY)], Field()]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class TargetModel(_Model):
    """The model whose output is served."""

    uri: str = Field(min_length=1)
    tokenizer: str = ""


class StaticDraft(_Model):
    """The static speculator trained offline."""

    uri: str = ""


class Resources(_Model):
    """Container resources (limits and requests: resource name -> quantity)."""

    limits: dict[str, Quantity] = Field(default_factory=dict)
    requests: dict[str, Quantity] = Field(default_factory=dict)


def _gpu_resources() -> Resources:
    return Resources(limits={GPU: 1})


class Toleration(_Model):
    """A Pod toleration."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Runtime(_Model):
    """The runtime pods."""

    image: str = Field(default="ghcr.io/adaspec/runtime:0.1.0", min_length=1)
    replicas: int = Field(default=1, ge=0)
    engine: Literal["native", "vllm"] = "native"
    strategy: Literal["hybrid", "adaptive"] = Field(
        default="hybrid",
        description="Speculators the pods run: hybrid (static draft, adaptive draft and suffix matching, the "
        "controller choosing) or adaptive (the adaptive draft alone, so acceptance measures the draft's "
        "revision).",
    )
    resources: Resources = Field(default_factory=_gpu_resources)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    startup_timeout: Duration = Field(
        default="15m",
        description="Longest a pod may take to load, verify and calibrate its models before /health answers "
        "200; a pod still loading after this is restarted.",
    )


class Adaptation(_Model):
    """Adaptation Jobs: schedule and drift trigger."""

    schedule: str = Field(default="0 */6 * * *", pattern=CRON)
    drift_window: Duration = "1h"
    drift_threshold: float = Field(default=0.1, ge=0, le=1)
    cooldown: Duration = "6h"
    resources: Resources = Field(default_factory=_gpu_resources)


class Promotion(_Model):
    """Canary analysis settings."""

    canary_replicas: int = Field(default=1, ge=1)
    analysis_interval: Duration = "5m"
    min_samples: int = Field(default=1000, ge=1)
    min_improvement: float = Field(default=0.02, ge=0)
    failure_limit: int = Field(default=3, ge=1)


class Rollback(_Model):
    """Automated rollback after promotion."""

    max_acceptance_drop: float = Field(default=0.05, ge=0, le=1)
    guard_window: Duration = "30m"


class Storage(_Model):
    """Where captured traffic and revisions live, shared by the runtime pods and the adaptation Jobs."""

    claim_name: str = Field(
        default="",
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$",
        description="A ReadWriteMany PersistentVolumeClaim of the speculator's namespace, mounted at "
        "/var/lib/adaspec in runtime pods and adaptation Jobs (captured traffic under capture/<pod>, "
        "revisions under revisions/). Empty: captured traffic stays in each pod and no adaptation Job runs.",
    )


class AdaptiveSpeculatorSpec(_Model):
    """`spec` of an AdaptiveSpeculator."""

    target_model: TargetModel
    static_draft: StaticDraft = Field(default_factory=StaticDraft)
    adaptive: AdaptiveSettings = Field(default_factory=AdaptiveSettings)
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    runtime: Runtime = Field(default_factory=Runtime)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)
    adaptation: Adaptation = Field(default_factory=Adaptation)
    promotion: Promotion = Field(default_factory=Promotion)
    rollback: Rollback = Field(default_factory=Rollback)
    storage: Storage = Field(default_factory=Storage)
    paused: bool = False
    pinned_revision: str = ""

    def model_post_init(self, context: object, /) -> None:
        """Check the cross-field rule the CRD states in CEL (minLookahead <= maxLookahead)."""
        if self.controller.min_lookahead > self.controller.max_lookahead:
            raise ValueError(
                "spec.controller.minLookahead must be less than or equal to maxLookahead, got "
                f"{self.controller.min_lookahead} > {self.controller.max_lookahead}"
            )


ConditionType = Literal["Ready", "Adapting", "Canary", "Degraded"]
Phase = Literal["Pending", "Progressing", "Ready", "Canary", "Degraded", "Paused"]


class Condition(_Model):
    """A standard Kubernetes condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class AdaptiveSpeculatorStatus(_Model):
    """`status` of an AdaptiveSpeculator (see docs/CONTRACTS.md for who writes what)."""

    phase: Phase | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = None
    replicas: int | None = None
    ready_replicas: int | None = None
    canary_ready_replicas: int | None = None
    selector: str | None = None
    stable_revision: str | None = None
    canary_revision: str | None = None
    acceptance_rate: float | None = None
    mean_accepted_length: float | None = None
    tokens_per_second: float | None = None
    last_drift_time: str | None = None
    last_adaptation_time: str | None = None
    message: str | None = None


class SpeculatorRevisionSpec(_Model):
    """`spec` of a SpeculatorRevision (immutable)."""

    speculator: str = Field(min_length=1)
    revision: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    artifact_uri: str = Field(min_length=1)
    sha256: str = Field(default="", pattern=r"^([a-f0-9]{64})?$")
    parent_revision: str = ""
    metrics: dict[str, float] = Field(default_factory=dict)


RevisionPhase = Literal["Candidate", "Canary", "Promoted", "RolledBack", "Rejected", "Superseded"]


class SpeculatorRevisionStatus(_Model):
    """`status` of a SpeculatorRevision."""

    phase: RevisionPhase | None = None
    reason: str | None = None


def dns_label(*parts: str) -> str:
    """Return a DNS-1123 label from `parts`: '-' joined, lower case, other characters to '-'.

    Longer than 63 characters, it is cut and ends in 8 hex digits of a hash of the parts, so that
    distinct parts keep distinct names.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) <= 63:
        return name
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"


def revision_object_name(speculator: str, revision: str) -> str:
    """Name of the SpeculatorRevision object holding `revision` of `speculator` (`<speculator>-<revision>`
    as a DNS label). The operator (reading) and the control plane (writing) both use this.
    """
    return dns_label(speculator, revision)
