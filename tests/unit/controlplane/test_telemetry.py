"""Every decision kind's counter is exposed at 0 from the start, so `increase()` sees its first decision."""

from __future__ import annotations

from typing import get_args

from prometheus_client.parser import text_string_to_metric_families

from adaspec.controlplane.policies.decision import DecisionKind
from adaspec.controlplane.telemetry import DECISION_KINDS, Telemetry


def decisions(telemetry: Telemetry) -> dict[str, float]:
    families = text_string_to_metric_families(telemetry.exposition().decode())
    (family,) = (f for f in families if f.name == "adaspec_controlplane_decisions")
    return {s.labels["kind"]: s.value for s in family.samples if s.name.endswith("_total")}


def test_every_decision_kind_starts_at_zero() -> None:
    assert set(DECISION_KINDS) == set(get_args(DecisionKind)) - {"none"}
    assert decisions(Telemetry()) == dict.fromkeys(DECISION_KINDS, 0.0)


def test_a_decision_counts_on_its_kind() -> None:
    telemetry = Telemetry()
    telemetry.decisions.labels("adaptation_failed").inc()
    counts = decisions(telemetry)
    assert counts["adaptation_failed"] == 1.0 and counts["drift"] == 0.0
