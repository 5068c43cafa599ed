"""The control plane's own Prometheus metrics, on a registry owned by one service instance.

PromQL: `sum by (kind) (rate(adaspec_controlplane_decisions_total[1h]))` (decisions per kind),
`rate(adaspec_controlplane_scrape_errors_total[5m])` (unreachable pods),
`histogram_quantile(0.99, rate(adaspec_controlplane_job_duration_seconds_bucket[10m]))` (slow jobs).
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .policies.decision import DecisionKind

# Every kind a decision can be recorded with ("none" never is): each series exists from the start, at 0,
# so `increase()` sees the first decision of a kind (manifests/monitoring/prometheusrule.yaml counts them).
DECISION_KINDS: tuple[str, ...] = tuple(k for k in get_args(DecisionKind) if k != "none")


class Telemetry:
    """Counters and histograms of one control-plane instance."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "adaspec_controlplane_decisions", "Decisions recorded, by kind.", ["kind"], registry=r
        )
        self.scrapes = Counter("adaspec_controlplane_scrapes", "Pod scrapes attempted.", registry=r)
        self.scrape_errors = Counter(
            "adaspec_controlplane_scrape_errors",
            "Failed pod scrapes, by speculator.",
            ["speculator"],
            registry=r,
        )
        self.drift_events = Counter(
            "adaspec_controlplane_drift_events", "Drift events, by speculator.", ["speculator"], registry=r
        )
        self.actions = Counter(
            "adaspec_controlplane_actions", "Actuations, by kind and result.", ["kind", "result"], registry=r
        )
        self.job_duration = Histogram(
            "adaspec_controlplane_job_duration_seconds",
            "Duration of scheduled jobs.",
            ["job"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )
        self.job_errors = Counter(
            "adaspec_controlplane_job_errors", "Scheduled jobs that raised, by job.", ["job"], registry=r
        )
        self.leader = Gauge("adaspec_controlplane_leader", "1 while this replica schedules.", registry=r)
        for kind in DECISION_KINDS:
            self.decisions.labels(kind)

    def exposition(self) -> bytes:
        """Return the metrics in the Prometheus text format."""
        return generate_latest(self.registry)
