"""A speculator's lifecycle state (the JSON of `speculators.state`): one model, one reader, one writer."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .policies.adaptation import AdaptationState
from .policies.canary import CanaryState
from .policies.drift import DriftState
from .policies.guard import GuardState

if TYPE_CHECKING:  # the store's models name their phase columns with SpeculatorPhase
    from .store.models import Speculator

# The control plane's phases of a speculator (its `phase` column, the API's `phase`):
# steady -> adapting -> canary -> guard -> steady; paused waits for a person (or its AdaptiveSpeculator).
SpeculatorPhase = Literal["steady", "adapting", "canary", "guard", "paused"]


class LifecycleState(BaseModel):
    """What a speculator's lifecycle remembers between evaluations (it survives a restart).

    The field names are the JSON keys the store has always held, so rows written before this model load
    as they are. Unlike the policies' frozen states, it is mutable (assignments validated): a step loads
    it, changes a few fields, and saves it, and mypy checks every field it touches.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    drift: DriftState | None = Field(default=None, description="the drift detector on the stable revision")
    drift_pending: bool = Field(default=False, description="a drift waits for an adaptation run")
    schedule_due: bool = Field(default=False, description="a cron schedule fired since the last run")
    adaptation: AdaptationState = Field(default_factory=AdaptationState)
    run_id: str | None = Field(default=None, description="the adaptation run in flight (phase adapting)")
    canary: CanaryState | None = Field(default=None, description="the canary's analysis (phase canary)")
    canary_started: datetime | None = Field(default=None, description="when the canary began")
    guard: GuardState | None = Field(default=None, description="the promoted revision's guard (phase guard)")
    paused_by_cr: bool = Field(default=False, description="the pause came from the AdaptiveSpeculator")


def load_state(spec: Speculator) -> LifecycleState:
    """Return the lifecycle state of `spec` (an empty or missing one is the initial state).

    Raises ValueError naming the speculator and the bad keys when the stored JSON does not fit.
    """
    try:
        return LifecycleState.model_validate(spec.state or {})
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"speculator {spec.name}: stored lifecycle state: {bad}") from None


def save_state(spec: Speculator, state: LifecycleState) -> None:
    """Write `state` into `spec` (a new dict, so the ORM sees the change); unset parts are left out."""
    raw = state.model_dump(mode="json")
    spec.state = {key: value for key, value in raw.items() if value is not None}
