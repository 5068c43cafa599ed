"""Settings of `adaspec up` (one YAML file) and the presets; builds the parts' own settings from them."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adaspec.runtime.settings import SettingsError, parse_settings
from adaspec.runtime.strategies import STRATEGY_NAMES

Preset = Literal["default", "demo"]

# Control-plane settings per preset (merged under the file's `control_plane` section). "demo" decides in
# seconds on a few hundred draft tokens: for a laptop and the tests, never for a fleet.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "default": {},
    "demo": {
        "scrape_interval_s": 2.0,
        "evaluate_interval_s": 4.0,
        "stale_after_s": 60.0,
        "lease_ttl_s": 6.0,
        "policies": {
            "drift": {"min_draft_tokens": 60, "reference_draft_tokens": 300, "threshold": 0.15},
            "adaptation": {"cooldown_s": 60.0, "budget_runs": 6, "budget_window_s": 3600.0},
            "canary": {
                "interval_s": 6.0,
                "min_draft_tokens": 60,
                "iterations": 2,
                "failure_limit": 1,
                "inconclusive_limit": 4,
            },
            "guard": {"window_s": 60.0, "min_draft_tokens": 100, "max_drop": 0.05},
        },
    },
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdaptSettings(_Strict):
    """How the control plane's adaptation runs call `adaspec adapt` (docs/CONTRACTS.md)."""

    last: int = Field(default=400, ge=1, description="distil on the last N captured requests")
    steps: int = Field(default=200, ge=1)
    time_budget_s: float = Field(default=600.0, gt=0)
    min_heldout: int = Field(default=4, ge=1)
    min_improvement: float = 0.02
    extra_args: list[str] = Field(default_factory=list, description="more `adaspec adapt` flags")


class UpSettings(_Strict):
    """Everything `adaspec up` reads; only `target_model` and `static_draft` have no default."""

    target_model: str = Field(default="", description="target model: a directory or file:// URI")
    static_draft: str = Field(default="", description="static draft: a directory or file:// URI")
    state_dir: Path = Path("adaspec-state")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535, description="the OpenAI endpoint and the control API")
    preset: Preset = "default"
    speculator: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    strategy: str = "hybrid"
    canary_share: float = Field(default=0.25, ge=0, le=1, description="traffic to the canary while one runs")
    capture_sample_rate: float = Field(default=0.25, gt=0, le=1)
    runtime: dict[str, Any] = Field(
        default_factory=dict, description="`adaspec serve --controller-config` (camelCase keys)"
    )
    serve_args: list[str] = Field(default_factory=list, description="more `adaspec serve` flags")
    adapt: AdaptSettings = AdaptSettings()
    control_plane: dict[str, Any] = Field(
        default_factory=dict, description="`adaspec control-plane` settings over the preset's"
    )
    ready_timeout_s: float = Field(default=900.0, gt=0, description="for both runtimes to load")
    proxy_timeout_s: float = Field(default=600.0, gt=0, description="one proxied request, at most")


def load_up_settings(path: Path | None, overrides: Mapping[str, Any]) -> UpSettings:
    """Return the settings of `path` (YAML) with `overrides` (command-line values) on top.

    Raises ValueError naming the file and the bad key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping at the top, got {type(loaded).__name__}")
        data = dict(loaded or {})
    data.update({k: v for k, v in overrides.items() if v is not None})
    where = path if path is not None else "settings"
    try:
        settings = UpSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{where}: {loc}: {first['msg']}") from None
    if not settings.target_model:
        raise ValueError(f"{where}: target_model: required (or --target-model)")
    if not settings.static_draft:
        raise ValueError(f"{where}: static_draft: required (or --static-draft): adaptation starts from it")
    if settings.strategy not in STRATEGY_NAMES:
        valid = ", ".join(STRATEGY_NAMES)
        raise ValueError(f"{where}: strategy: unknown {settings.strategy!r}; valid: {valid}")
    if settings.strategy not in ("hybrid", "adaptive"):
        raise ValueError(
            f"{where}: strategy: {settings.strategy!r} has no adaptive draft to load revisions into "
            "(valid here: hybrid, adaptive)"
        )
    try:
        runtime_yaml(settings)
    except SettingsError as exc:
        raise ValueError(f"{where}: runtime: {exc}") from None
    return settings


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `over` merged in (mappings recursively, anything else replaced)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def runtime_yaml(settings: UpSettings) -> str:
    """Return the runtimes' `--controller-config` YAML: the file's `runtime` section with capture on.

    Raises SettingsError naming a key the runtime does not know.
    """
    capture = {"enabled": True, "sampleRate": settings.capture_sample_rate}
    data = deep_merge(settings.runtime, {"capture": capture})
    text = yaml.safe_dump(data, sort_keys=True)
    parse_settings(text, "runtime")
    return text


def adapt_command(settings: UpSettings) -> list[str]:
    """Return `local.adapt_command`: the control plane's own `adaspec adapt` argv (its placeholders,
    filled by the local actuator: parent artifact, target, capture, out) with this file's recipe."""
    from adaspec.controlplane.config import ADAPT_ARGS

    return [sys.executable, "-m", "adaspec.cli.main", *ADAPT_ARGS, *adapt_recipe(settings.adapt)]


def adapt_recipe(a: AdaptSettings) -> list[str]:
    """Return the `adaspec adapt` flags of a recipe (the window, steps, budget and gate), for either
    actuator (`local.adapt_command`, `kubernetes.job_extra_args`)."""
    return [
        f"--last={a.last}",
        f"--steps={a.steps}",
        f"--time-budget={a.time_budget_s}",
        f"--min-heldout={a.min_heldout}",
        f"--min-improvement={a.min_improvement}",
        *a.extra_args,
    ]


def control_plane_data(
    settings: UpSettings,
    state_dir: Path,
    metrics_urls: Mapping[str, str],
    load_urls: Mapping[str, str],
    token_file: Path,
    capture_dir: Path,
) -> dict[str, Any]:
    """Return the control plane's settings (a mapping for `adaspec.controlplane.config.Settings`):
    SQLite in the state dir, the local actuator on the two runtimes, one speculator, the preset's
    intervals and policies, the file's `control_plane` section on top."""
    runs = state_dir / "runs"
    generated: dict[str, Any] = {
        "db_url": f"sqlite:///{(state_dir / 'controlplane.db').resolve()}",
        "state_dir": str(state_dir.resolve()),
        "actuator": "local",
        "local": {
            "work_dir": str(runs.resolve()),
            "load_urls": dict(load_urls),
            "load_token_file": str(token_file.resolve()),
            "adapt_command": adapt_command(settings),
            "target_model": str(settings.target_model),
            "static_draft": str(settings.static_draft),
            "capture": str(capture_dir.resolve()),
            "run_timeout_s": settings.adapt.time_budget_s + 600.0,
        },
        "speculators": [
            {
                "name": settings.speculator,
                "source": "runtime",
                "endpoints": [{"url": url, "role": role} for role, url in metrics_urls.items()],
            }
        ],
    }
    return deep_merge(deep_merge(PRESETS[settings.preset], generated), settings.control_plane)
