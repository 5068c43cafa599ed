"""Settings of the control plane (Pydantic, extra=forbid): fleet, sources, policies, auth, actuator."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy.engine import make_url

from .policies.adaptation import AdaptationPolicy
from .policies.canary import CanaryPolicy
from .policies.drift import DriftPolicy
from .policies.guard import GuardPolicy

Role = Literal["stable", "canary"]
HttpUrl = Annotated[str, Field(pattern=r"^https?://")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endpoint(_Strict):
    """One pod's metrics URL. `role` is used when the pod does not say (vLLM has no revision_info)."""

    url: str = Field(pattern=r"^https?://")
    role: Role = "stable"
    pod: str = Field(default="", description="`<pod name>/<uid>` of a discovered pod: its series' identity")

    @property
    def key(self) -> str:
        """The scrape target's identity: the URL, and the pod where known (an IP may be reused)."""
        return f"{self.url}#pod={self.pod}" if self.pod else self.url


class Policies(_Strict):
    """The four policies; a speculator may override any of them."""

    drift: DriftPolicy = DriftPolicy()
    adaptation: AdaptationPolicy = AdaptationPolicy()
    canary: CanaryPolicy = CanaryPolicy()
    guard: GuardPolicy = GuardPolicy()


class SpeculatorConfig(_Strict):
    """One speculator of the fleet and where its metrics come from."""

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=200)
    namespace: str = "default"
    # `pods`: an AdaptiveSpeculator's runtime pods, found through the Kubernetes API (never in the YAML)
    source: Literal["runtime", "vllm", "prometheus", "pods"] = "runtime"
    endpoints: list[Endpoint] = []
    prometheus_url: str | None = None
    prometheus_selector: str = ""
    # the revision a speculator serves before any adaptation: the operator's and the runtime's `static`
    # (the static draft), so drift on it is seen and a rollback to it is a rollback to the static draft
    initial_revision: str = Field(default="static", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    schedule: str | None = Field(
        default=None, description="cron expression (5 fields) for scheduled adaptation"
    )
    policies: Policies | None = None

    @model_validator(mode="after")
    def _source_has_address(self) -> SpeculatorConfig:
        if self.source == "prometheus" and not self.prometheus_url:
            raise ValueError(f"speculator {self.name}: source prometheus needs prometheus_url")
        if self.source in ("runtime", "vllm") and not self.endpoints:
            raise ValueError(f"speculator {self.name}: source {self.source} needs endpoints")
        return self


# `adaspec adapt`'s argv after the program name (runtime/adaspec/runtime/adapt/cli.py parses it; a test
# fills these with both actuators' values and runs that parser).
ADAPT_ARGS: tuple[str, ...] = (
    "adapt",
    "--speculator={speculator}",
    "--run-id={run_id}",
    "--revision={revision}",
    "--parent={parent}",
    "--parent-artifact={parent_artifact}",
    "--target-model={target_model}",
    "--capture={capture}",
    "--out={out}",
)
ADAPT_PLACEHOLDERS = (
    "speculator",
    "run_id",
    "revision",
    "parent",
    "parent_artifact",
    "target_model",
    "capture",
    "out",
)


class LocalActuatorConfig(_Strict):
    """One-machine mode: adaptation as a subprocess, revisions loaded through the runtime's admin API
    (`POST /admin/v1/revisions/load`, docs/CONTRACTS.md "Runtime process")."""

    adapt_command: list[str] = Field(
        default_factory=lambda: ["adaspec", *ADAPT_ARGS],
        description="argv of an adaptation run; placeholders: "
        + ", ".join(f"{{{p}}}" for p in ADAPT_PLACEHOLDERS),
    )
    work_dir: Path = Path("controlplane-runs")
    target_model: str = Field(
        default="", description="the target model adapt distils toward ({target_model})"
    )
    capture: str = Field(default="", description="the runtimes' captured traffic directory ({capture})")
    static_draft: str = Field(default="", description="the static draft: parent artifact of revision static")
    load_url: HttpUrl | None = Field(
        default=None, description="the runtime's admin load URL for both roles (load_urls overrides a role)"
    )
    load_urls: dict[Role, HttpUrl] = Field(
        default_factory=dict, description="the admin load URL per role: {stable: URL, canary: URL}"
    )
    load_token_file: Path | None = Field(
        default=None, description="file whose first non-comment line starts with the runtime's admin token"
    )
    load_timeout_s: float = Field(default=300.0, gt=0, description="a load verifies the revision first")
    run_timeout_s: float = 6 * 3600.0

    @model_validator(mode="after")
    def _token_with_url(self) -> LocalActuatorConfig:
        if (self.load_url or self.load_urls) and self.load_token_file is None:
            raise ValueError("local.load_token_file: required when local.load_url or local.load_urls is set")
        return self

    def load_url_for(self, role: Role) -> str | None:
        """Return the load URL of the runtime serving `role` (load_urls first, then load_url), or None."""
        return self.load_urls.get(role) or self.load_url


class KubernetesActuatorConfig(_Strict):
    """Fleet mode: speculators from AdaptiveSpeculators, SpeculatorRevisions, adaptation Jobs and status
    patches (docs/CONTRACTS.md)."""

    discover: bool = Field(default=True, description="manage the AdaptiveSpeculators of `namespaces`")
    namespaces: list[str] = Field(
        default_factory=list, description="where to find AdaptiveSpeculators (empty: every namespace)"
    )
    job_args: list[str] = Field(
        default_factory=lambda: list(ADAPT_ARGS),
        description="`adaspec adapt` argv of a Job; placeholders: "
        + ", ".join(f"{{{p}}}" for p in ADAPT_PLACEHOLDERS),
    )
    job_extra_args: list[str] = Field(
        default_factory=list, description="more `adaspec adapt` flags (the recipe: --steps, --last, ...)"
    )
    register_url: HttpUrl = Field(
        default="http://adaspec-control-plane.adaspec-system.svc:8081",
        description="this control plane's API as a Job reaches it (the candidate is registered there)",
    )
    job_service_account: str = Field(
        default="adaspec-adaptation",
        description="ServiceAccount of adaptation Jobs, in each speculator's namespace; its projected token "
        "may only register candidates (auth.register_service_accounts)",
    )
    job_deadline_s: int = Field(default=4 * 3600, ge=60, description="activeDeadlineSeconds of a Job")
    job_ttl_s: int = Field(default=86400, ge=0, description="ttlSecondsAfterFinished: Jobs kept for logs")


class AuthConfig(_Strict):
    """Bearer tokens: a token file (`<token> <read|admin>` per line) or Kubernetes TokenReview."""

    mode: Literal["token-file", "tokenreview", "none"] = "token-file"
    token_file: Path | None = None
    admin_groups: list[str] = ["system:masters", "adaspec:admins"]
    read_groups: list[str] = ["adaspec:viewers"]
    register_service_accounts: list[str] = Field(
        default_factory=lambda: ["adaspec-adaptation"],
        description="ServiceAccounts (of any namespace) whose tokens may register candidates and nothing "
        "else: the adaptation Jobs'",
    )
    max_body_bytes: int = Field(default=65536, ge=1024)


class Settings(_Strict):
    """Everything the service reads at start."""

    db_url: str = "sqlite:///adaspec-controlplane.db"
    state_dir: Path | None = Field(
        default=None,
        description="where a generated admin token is kept (default: the SQLite file's directory, else "
        "$XDG_STATE_HOME/adaspec/control-plane)",
    )
    scrape_interval_s: float = Field(default=15.0, gt=0)
    evaluate_interval_s: float = Field(default=60.0, gt=0)
    scrape_timeout_s: float = Field(default=5.0, gt=0)
    stale_after_s: float = Field(default=300.0, gt=0, description="a pod unseen this long stops counting")
    scrape_concurrency: int = Field(default=32, ge=1)
    lease_ttl_s: float = Field(default=30.0, gt=0)
    policies: Policies = Policies()
    speculators: list[SpeculatorConfig] = []
    actuator: Literal["local", "kubernetes", "none"] = "local"
    local: LocalActuatorConfig = LocalActuatorConfig()
    kubernetes: KubernetesActuatorConfig = KubernetesActuatorConfig()
    auth: AuthConfig = AuthConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        seen: set[str] = set()
        for s in self.speculators:
            if s.name in seen:
                raise ValueError(f"speculators: duplicate name {s.name!r}")
            seen.add(s.name)
        return self

    def policies_for(self, name: str) -> Policies:
        """Return the speculator's own policies, or the fleet's."""
        for s in self.speculators:
            if s.name == name and s.policies is not None:
                return s.policies
        return self.policies

    def speculator(self, name: str) -> SpeculatorConfig | None:
        """Return the configured speculator called `name`, or None."""
        return next((s for s in self.speculators if s.name == name), None)


def default_state_dir(db_url: str, env: Mapping[str, str] | None = None) -> Path:
    """Return the state directory for `db_url`: the SQLite file's directory, else
    `$XDG_STATE_HOME/adaspec/control-plane` (`~/.local/state/...` when XDG_STATE_HOME is unset or relative,
    as the XDG base directory spec says)."""
    env = os.environ if env is None else env
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return Path(url.database).parent
    xdg = env.get("XDG_STATE_HOME") or ""
    base = Path(xdg) if Path(xdg).is_absolute() else Path(env.get("HOME") or Path.home()) / ".local" / "state"
    return base / "adaspec" / "control-plane"


def load_settings(path: Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Return settings from a YAML file, with ADASPEC_CP_DB_URL from `env` (default os.environ) on top.

    Raises ValueError naming the file and the bad key.
    """
    env = os.environ if env is None else env
    data: dict[str, object] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top, got {type(loaded).__name__}")
        data = dict(loaded or {})
    if env.get("ADASPEC_CP_DB_URL"):
        data["db_url"] = env["ADASPEC_CP_DB_URL"]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = path if path is not None else "settings"
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {loc}: {first['msg']}") from exc
