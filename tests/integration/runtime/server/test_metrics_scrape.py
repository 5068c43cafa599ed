"""The control plane's own scrape code reads a running `serve`: names, labels and the figures it derives."""

from __future__ import annotations

import asyncio

import pytest

from adaspec.controlplane.counters import delta
from adaspec.controlplane.fetch import fetch_many
from adaspec.controlplane.scrape import PodMetrics, parse_exposition
from adaspec.runtime.workloads import Prompt

from .serving import Serving


def scrape(served: Serving) -> PodMetrics:
    """One scrape, exactly as the control plane's scrape job does it."""
    body = asyncio.run(fetch_many([served.metrics_url], timeout_s=10.0, concurrency=1))[served.metrics_url]
    assert isinstance(body, str), body
    return parse_exposition(body, "runtime")


def test_scraped_counters_match_the_responses(served: Serving, prompts: list[Prompt]) -> None:
    before = scrape(served)
    assert before.revision is not None and before.role == "stable"
    totals = {"drafts": 0, "draft_tokens": 0, "accepted": 0, "generated": 0, "passes": 0}
    per_position: list[int] = []
    for p in prompts[7:13]:
        out = served.openai().completions.create(
            model="fixture",
            prompt=list(p.token_ids),
            max_tokens=16,
            temperature=0,
            extra_body={"speculation_stats": True},
        )
        s = out.model_extra["speculation"]
        totals["generated"] += s["generated_tokens"]
        totals["passes"] += s["target_forward_passes"]
        for ps in s["per_speculator"].values():
            totals["drafts"] += ps["drafts"]
            totals["draft_tokens"] += ps["draft_tokens"]
            totals["accepted"] += ps["accepted_tokens"]
            for i, n in enumerate(ps["accepted_per_position"]):
                per_position += [0] * (i + 1 - len(per_position))
                per_position[i] += n
    window = delta(before.counters, scrape(served).counters)
    assert totals["drafts"] > 0, "nothing was drafted: the test would show nothing"
    assert window.drafts == totals["drafts"]
    assert window.draft_tokens == totals["draft_tokens"]
    assert window.accepted == totals["accepted"]
    assert window.generated == totals["generated"]
    assert window.forward_passes == totals["passes"]
    scraped = [int(x) for x in window.per_position]
    for counts in (per_position, scraped):  # a position drafted but never accepted has a series at 0, or none
        while counts and counts[-1] == 0:
            counts.pop()
    assert scraped == per_position
    # the figures the policies read, by the one shared definition
    assert window.acceptance_rate == pytest.approx(totals["accepted"] / totals["draft_tokens"])
    assert window.mean_accepted_length == pytest.approx(1 + totals["accepted"] / totals["drafts"])
