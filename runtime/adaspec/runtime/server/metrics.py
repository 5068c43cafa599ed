"""Prometheus exporter of the runtime (prometheus-client): spec-decode counters, latency, revision.

Names and labels are docs/CONTRACTS.md's ("Runtime metrics"); the control plane scrapes them. PromQL:

- acceptance rate:        sum(rate(adaspec_spec_decode_num_accepted_tokens_total[5m]))
                          / sum(rate(adaspec_spec_decode_num_draft_tokens_total[5m]))
- mean accepted length:   1 + sum(rate(adaspec_spec_decode_num_accepted_tokens_total[5m]))
                          / sum(rate(adaspec_spec_decode_num_drafts_total[5m]))
- tokens per target pass: rate(adaspec_generation_tokens_total[5m])
                          / rate(adaspec_target_forward_passes_total[5m])
- time to first token:    histogram_quantile(0.99,
                            sum by (le) (rate(adaspec_time_to_first_token_seconds_bucket[5m])))
- chosen lookahead:       sum by (speculator) (rate(adaspec_spec_decode_lookahead_sum[5m]))
                          / sum by (speculator) (rate(adaspec_spec_decode_lookahead_count[5m]))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from adaspec.runtime import specmetrics as sm
from adaspec.runtime.server.scheduler import Outcome

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
)
E2E_BUCKETS = (0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 120.0, 300.0)
LOOKAHEAD_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 48, 64)
FINISH_REASONS = ("stop", "length", "cancelled")


class RuntimeMetrics:
    """Every metric of one `serve` process, in its own registry."""

    def __init__(self, speculators: Sequence[str], role: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.role = role
        lab = ["speculator"]
        self.drafts = Counter(sm.DRAFTS, "Drafts verified by the target.", lab, registry=r)
        self.draft_tokens = Counter(sm.DRAFT_TOKENS, "Drafted tokens sent to verification.", lab, registry=r)
        self.accepted = Counter(sm.ACCEPTED, "Drafted tokens the target accepted.", lab, registry=r)
        self.per_pos = Counter(
            sm.ACCEPTED_PER_POS, "Accepted drafted tokens by draft position.", [*lab, "position"], registry=r
        )
        self.failures = Counter(
            "adaspec_spec_decode_proposer_failures_total",
            "Proposals that raised or were malformed (that step decoded without speculation).",
            lab,
            registry=r,
        )
        self.lookahead = Histogram(
            "adaspec_spec_decode_lookahead",
            "Tokens the controller chose to verify per draft.",
            lab,
            buckets=LOOKAHEAD_BUCKETS,
            registry=r,
        )
        self.generation = Counter(sm.GENERATION_TOKENS, "Tokens generated.", registry=r)
        self.prompt = Counter("adaspec_prompt_tokens_total", "Prompt tokens prefilled.", registry=r)
        self.passes = Counter(sm.TARGET_PASSES, "Target forward passes while decoding.", registry=r)
        self.revision_info = Gauge(
            sm.REVISION_INFO,
            "The draft revision served (value 1), its role and the adaptive draft's live version.",
            ["revision", "role", "adaptive_version"],
            registry=r,
        )
        self.queue_time = Histogram(
            "adaspec_request_queue_time_seconds",
            "Time waiting in the queue.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "adaspec_time_to_first_token_seconds",
            "From arrival to the first generated token.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "adaspec_inter_token_latency_seconds",
            "Time per output token after the first (a step's time over the tokens it committed).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "adaspec_e2e_request_latency_seconds",
            "From arrival to the last token.",
            buckets=E2E_BUCKETS,
            registry=r,
        )
        self.success = Counter(
            "adaspec_request_success_total",
            "Requests finished, by finish reason.",
            ["finished_reason"],
            registry=r,
        )
        self.running = Gauge("adaspec_num_requests_running", "Requests being decoded.", registry=r)
        self.waiting = Gauge("adaspec_num_requests_waiting", "Requests admitted, not started.", registry=r)
        self.loads = Counter(
            "adaspec_revision_loads_total", "Draft revision loads, by result.", ["result"], registry=r
        )
        self.train_failures = Gauge(
            "adaspec_adaptive_train_failures", "Background training steps that failed.", registry=r
        )
        for name in speculators:  # every series exists from the start (rate() needs a first sample)
            for c in (self.drafts, self.draft_tokens, self.accepted, self.failures):
                c.labels(name)
        for reason in FINISH_REASONS:
            self.success.labels(reason)
        for result in ("ok", "refused"):
            self.loads.labels(result)
        self._info: tuple[str, str, str] | None = None
        self.revision_source: Callable[[], tuple[str, int]] | None = None  # (revision, adaptive version)

    def bind(self, waiting: Callable[[], float], running: Callable[[], float]) -> None:
        """Read the queue gauges from the scheduler at scrape time."""
        self.waiting.set_function(waiting)
        self.running.set_function(running)

    def set_revision(self, revision: str, adaptive_version: int) -> None:
        """Publish the revision served (the previous series is removed)."""
        key = (revision, self.role, str(adaptive_version))
        if key == self._info:
            return
        if self._info is not None:
            self.revision_info.remove(*self._info)
        self.revision_info.labels(*key).set(1)
        self._info = key

    # -- RequestObserver -------------------------------------------------------------------
    def on_started(self, queue_seconds: float) -> None:
        """A request left the queue."""
        self.queue_time.observe(queue_seconds)

    def on_step(self, num_tokens: int, seconds: float, first: bool) -> None:
        """One engine step committed `num_tokens` tokens in `seconds` (the first includes the prefill)."""
        if first or num_tokens <= 0:
            return
        per = seconds / num_tokens
        for _ in range(num_tokens):
            self.itl.observe(per)

    def on_finished(self, outcome: Outcome) -> None:
        """Count a finished request's tokens, drafts and latencies."""
        s = outcome.stats
        self.generation.inc(s.generated_tokens)
        self.prompt.inc(outcome.prompt_tokens)
        self.passes.inc(s.target_forward_passes)
        for name, ps in s.per_speculator.items():
            self.drafts.labels(name).inc(ps.drafts)
            self.draft_tokens.labels(name).inc(ps.draft_tokens)
            self.accepted.labels(name).inc(ps.accepted_tokens)
            self.failures.labels(name).inc(ps.failures)
            for pos, n in enumerate(ps.accepted_per_position):
                if n:
                    self.per_pos.labels(name, str(pos)).inc(n)
            for k, n in enumerate(ps.lookaheads):
                for _ in range(n):
                    self.lookahead.labels(name).observe(k)
        if outcome.first_token_seconds is not None:
            self.ttft.observe(outcome.first_token_seconds)
        self.e2e.observe(outcome.seconds)
        self.success.labels(outcome.finish_reason).inc()
        if self.revision_source is not None:  # the adaptive draft may have moved to newer weights
            self.set_revision(*self.revision_source())
