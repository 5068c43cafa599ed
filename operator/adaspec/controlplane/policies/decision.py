"""Decisions as data: what a policy concluded, why, and from which inputs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

DecisionKind = Literal[
    "none",
    "drift",
    "recovered",
    "adapt",
    "adaptation_failed",
    "start_canary",
    "canary_check",
    "promote",
    "reject",
    "pause",
    "resume",
    "rollback",
    "guard_passed",
]

Inputs = dict[str, float | int | str | bool | None]


class Decision(BaseModel):
    """One policy outcome: `kind` is carried out by an actuator (or only recorded), `inputs` explain it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: DecisionKind
    reason: str
    inputs: Inputs = {}


class PolicyState(BaseModel):
    """Base of the policies' states: frozen, JSON-serialisable, so hysteresis survives a restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyConfig(BaseModel):
    """Base of the policies' settings: unknown keys are an error that names them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
