"""The runtime's settings file (`--controller-config`): one schema and one set of defaults.

The operator writes this YAML into each speculator's ConfigMap from the CRD's `controller`, `adaptive`
and `capture` fields, which are these very models (camelCase keys). The runtime parses it here and turns
it into the engine's configs; no default lives anywhere else. Torch-free, so the operator imports it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
Duration = Annotated[str, Field(pattern=DURATION)]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float:
    """Return the seconds in a Go-style duration (`15m`, `1h30m`, `500ms`); ValueError naming it otherwise."""
    if not re.fullmatch(DURATION, value):
        raise ValueError(f"duration {value!r} is not a sequence of <number><ms|s|m|h>, such as 15m or 1h30m")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True)


class ControllerSettings(_Settings):
    """Confidence-aware controller bounds."""

    min_lookahead: int = Field(
        default=0, ge=0, le=64, description="Fewest tokens drafted whenever a speculator is available."
    )
    max_lookahead: int = Field(default=8, ge=1, le=64, description="Most tokens drafted per step.")
    confidence_threshold: float = Field(
        default=0.2,
        ge=0,
        lt=1,
        description="Drafting stops once the estimated probability that every drafted token is accepted "
        "falls below this.",
    )
    exploration: float = Field(
        default=0.03, ge=0, le=1, description="Probability of trying a speculator that is not the best."
    )


class AdaptiveSettings(_Settings):
    """Online distillation of the adaptive speculator from served traffic."""

    enabled: bool = Field(default=True, description="Run the adaptive speculator (hybrid strategy).")
    learning_rate: float = Field(default=0.002, gt=0, description="AdamW learning rate of online updates.")
    steps_per_request: int = Field(
        default=4, ge=1, le=1000, description="Optimisation steps after each served request."
    )
    buffer_size: int = Field(default=64, ge=1, le=100000, description="Served requests kept for replay.")
    batch_size: int = Field(default=4, ge=1, le=1024, description="Requests per optimisation step.")
    compute_share: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="Largest fraction of wall time the background trainer may spend training.",
    )


class CaptureSettings(_Settings):
    """Sampled traffic capture (stores prompts and outputs) for adaptation jobs."""

    enabled: bool = Field(default=False, description="Capture sampled traffic.")
    sample_rate: float = Field(default=0.05, ge=0, le=1, description="Fraction of requests captured.")
    max_bytes: int = Field(
        default=1 << 30, ge=1 << 20, description="Most bytes of captured shards kept; the oldest go first."
    )
    retention: Duration = Field(default="168h", description="Age after which captured shards are removed.")


class RuntimeSettings(_Settings):
    """The whole `--controller-config` file."""

    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    adaptive: AdaptiveSettings = Field(default_factory=AdaptiveSettings)
    capture: CaptureSettings = Field(default_factory=CaptureSettings)


class SettingsError(ValueError):
    """A settings file that cannot be read, or names a setting this runtime does not support."""


def parse_settings(text: str, source: str = "settings") -> RuntimeSettings:
    """Return the settings in a YAML document; SettingsError naming the key and value otherwise."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        settings = RuntimeSettings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SettingsError(f"{source}: {where}: {first['msg']} (got {first.get('input')!r})") from None
    c = settings.controller
    if c.min_lookahead > c.max_lookahead:
        raise SettingsError(
            f"{source}: controller.minLookahead ({c.min_lookahead}) exceeds maxLookahead ({c.max_lookahead})"
        )
    return settings


def load_settings(path: str) -> RuntimeSettings:
    """Read the settings file at `path` (empty path: the defaults)."""
    if not path:
        return RuntimeSettings()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"--controller-config {path!r}: {exc.strerror}") from None
    return parse_settings(text, path)
