"""Actions as data: one model per kind of actuation a decision owes, parsed back from the store by kind.

An action is recorded in `actions` with its `kind` in its own column and the model's other fields as the
JSON `payload` (the keys the store has always held: `speculator`, `namespace` and the kind's fields).
Payloads recorded before `sha256` was part of them carry none, and parse with `sha256` None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class InvalidActionError(ValueError):
    """A stored action that is not one (an unknown kind, a payload that does not fit its kind): it is
    recorded as failed with this message and never retried."""


class _Owed(BaseModel):
    """Fields of every action: the speculator it acts on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    speculator: str
    namespace: str

    def payload(self) -> dict[str, object]:
        """Return the JSON stored in `actions.payload`: every field but `kind` (stored in its column)."""
        return self.model_dump(mode="json", exclude={"kind"})


class StartAdaptation(_Owed):
    """Start adaptation run `run_id` from the `parent` revision."""

    kind: Literal["start_adaptation"] = "start_adaptation"
    run_id: str
    parent: str | None = None


class StartCanary(_Owed):
    """Serve the candidate `revision` on the canary, next to `parent` (the stable revision)."""

    kind: Literal["start_canary"] = "start_canary"
    revision: str
    artifact_uri: str | None = None
    sha256: str | None = None
    parent: str | None = None


class Promote(_Owed):
    """Serve the canary `revision` as the stable one; `previous` is superseded."""

    kind: Literal["promote"] = "promote"
    revision: str
    previous: str | None = None
    artifact_uri: str | None = None
    sha256: str | None = None


class AbortCanary(_Owed):
    """Stop the canary `revision` (it is rejected); the stable revision keeps serving."""

    kind: Literal["abort_canary"] = "abort_canary"
    revision: str
    reason: str = ""


class Rollback(_Owed):
    """Serve `to_revision` again in place of the stable `revision` (rolled back)."""

    kind: Literal["rollback"] = "rollback"
    revision: str
    to_revision: str
    reason: str = ""
    artifact_uri: str | None = None
    sha256: str | None = None


ActionModel = Annotated[
    StartAdaptation | StartCanary | Promote | AbortCanary | Rollback, Field(discriminator="kind")
]
ACTION_KINDS: tuple[str, ...] = tuple(
    str(m.model_fields["kind"].default)
    for m in (StartAdaptation, StartCanary, Promote, AbortCanary, Rollback)
)

_ADAPTER: TypeAdapter[ActionModel] = TypeAdapter(ActionModel)  # built once; immutable


def parse_action(kind: str, payload: Mapping[str, object]) -> ActionModel:
    """Return the action stored as `kind` with `payload`.

    Raises InvalidActionError naming the kind (and the valid ones) or each bad field of the payload.
    """
    if kind not in ACTION_KINDS:
        raise InvalidActionError(f"action kind: unknown {kind!r} (valid: {', '.join(ACTION_KINDS)})")
    if not isinstance(payload, Mapping):
        raise InvalidActionError(f"{kind} payload: not an object: {payload!r}"[:500])
    try:
        return _ADAPTER.validate_python({**payload, "kind": kind})
    except ValidationError as exc:
        bad = "; ".join(
            f"{'.'.join(map(str, e['loc'][1:])) or '(payload)'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidActionError(f"{kind} payload: {bad}"[:2000]) from None
