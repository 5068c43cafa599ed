"""The lifecycle state: rows as the control plane has always written them load, and save -> load keeps it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adaspec.controlplane.policies.adaptation import AdaptationState
from adaspec.controlplane.policies.canary import CanaryState
from adaspec.controlplane.policies.drift import DriftState
from adaspec.controlplane.policies.guard import GuardState
from adaspec.controlplane.state import LifecycleState, load_state, save_state
from adaspec.controlplane.store.models import Speculator

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T5 = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
DRIFT = {  # a policy state as `model_dump(mode="json")` wrote it
    "revision": "r0",
    "since": "2026-01-01T00:05:00Z",
    "ref_drafts": 500.0,
    "ref_draft_tokens": 2000.0,
    "ref_accepted": 1400.0,
    "reference": 0.7,
    "statistic": 0.05,
    "drifted": False,
    "recovered_windows": 0,
}


def spec(state: dict[str, Any] | None) -> Speculator:
    return Speculator(name="chat", namespace="default", phase="steady", state=state, updated_at=T0)


# What the code before LifecycleState left in `speculators.state` at each point of the lifecycle.
ROWS = {
    "created": {},
    "steady": {"drift": DRIFT, "drift_pending": False},
    "cron fired": {"drift": DRIFT, "drift_pending": False, "schedule_due": True},
    "adapting": {
        "drift": DRIFT,
        "drift_pending": False,
        "adaptation": {"starts": ["2026-01-01T00:05:00Z"]},
        "schedule_due": False,
        "run_id": "chat-run1",
    },
    "canary": {
        "drift": DRIFT,
        "drift_pending": False,
        "adaptation": {"starts": ["2026-01-01T00:05:00Z"]},
        "schedule_due": False,
        "canary": {
            "revision": "r1",
            "since": "2026-01-01T00:05:00Z",
            "successes": 1,
            "failures": 0,
            "inconclusive": 0,
        },
        "canary_started": "2026-01-01T00:05:00+00:00",  # datetime.isoformat(), not pydantic's
    },
    "guard": {
        "drift_pending": False,
        "adaptation": {"starts": ["2026-01-01T00:05:00Z"]},
        "schedule_due": False,
        "guard": {
            "revision": "r1",
            "previous_revision": "r0",
            "previous_acceptance": 0.6,
            "promoted_at": "2026-01-01T00:05:00Z",
        },
    },
    "paused by its resource": {"drift": DRIFT, "drift_pending": True, "paused_by_cr": True},
}


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_rows_as_the_code_has_always_written_them_load(row: dict[str, Any]) -> None:
    st = load_state(spec(row))
    assert set(row) <= set(LifecycleState.model_fields)
    assert st.drift == (DriftState.model_validate(DRIFT) if "drift" in row else None)
    assert st.drift_pending is row.get("drift_pending", False)
    assert st.schedule_due is row.get("schedule_due", False)
    assert st.run_id == row.get("run_id")
    assert st.paused_by_cr is row.get("paused_by_cr", False)
    assert st.adaptation == AdaptationState(starts=(T5,) if "adaptation" in row else ())
    if "canary" in row:
        assert st.canary == CanaryState(revision="r1", since=T5, successes=1)
        assert st.canary_started == T5 and st.canary_started.tzinfo is not None
    else:
        assert st.canary is None and st.canary_started is None
    expected_guard = GuardState(
        revision="r1", previous_revision="r0", previous_acceptance=0.6, promoted_at=T5
    )
    assert st.guard == (expected_guard if "guard" in row else None)


@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_a_loaded_row_saves_back_to_the_same_keys_and_values(row: dict[str, Any]) -> None:
    sp = spec(row)
    save_state(sp, load_state(sp))
    again = load_state(sp)
    assert again == load_state(spec(row))
    # unset parts are left out; what was there is still there (times in pydantic's JSON form)
    assert set(row) <= set(sp.state)
    assert None not in sp.state.values()
    assert sp.state.keys() - row.keys() <= {"drift_pending", "schedule_due", "adaptation", "paused_by_cr"}
    for key in ("drift", "canary", "guard", "run_id", "paused_by_cr", "schedule_due"):
        if key in row:
            assert sp.state[key] == row[key]


def test_a_missing_state_is_the_initial_one() -> None:
    assert load_state(spec(None)) == LifecycleState()


def test_save_writes_a_new_dict() -> None:
    sp = spec({"drift_pending": False})
    before = sp.state
    st = load_state(sp)
    st.schedule_due = True
    save_state(sp, st)
    assert sp.state is not before and sp.state["schedule_due"] is True and before == {"drift_pending": False}


def test_a_bad_row_is_refused_naming_the_speculator_and_key() -> None:
    with pytest.raises(
        ValueError, match=r"speculator chat: stored lifecycle state: drift_pendng: Extra inputs"
    ):
        load_state(spec({"drift_pendng": True}))
    with pytest.raises(
        ValueError, match=r"speculator chat: stored lifecycle state: canary.since: Field required"
    ):
        load_state(spec({"canary": {"revision": "r1"}}))


def test_assignments_are_validated() -> None:
    st = LifecycleState()
    with pytest.raises(ValueError, match="run_id"):
        st.run_id = 3  # type: ignore[assignment]
