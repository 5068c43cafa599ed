"""Metric sources: the runtime's and vLLM's `/metrics` (exposition format) and Prometheus' query API."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import httpx

from adaspec.runtime import specmetrics as sm

from .counters import Counters

SourceKind = Literal["runtime", "vllm"]

# Counter names per source (docs/CONTRACTS.md, ../shared/ANCHORS.md); field of `Counters` each feeds.
NAMES: Mapping[str, Mapping[str, str]] = {
    "runtime": {
        sm.DRAFTS: "drafts",
        sm.DRAFT_TOKENS: "draft_tokens",
        sm.ACCEPTED: "accepted",
        sm.ACCEPTED_PER_POS: "per_position",
        sm.GENERATION_TOKENS: "generated",
        sm.TARGET_PASSES: "forward_passes",
    },
    "vllm": {
        "vllm:spec_decode_num_drafts_total": "drafts",
        "vllm:spec_decode_num_draft_tokens_total": "draft_tokens",
        "vllm:spec_decode_num_accepted_tokens_total": "accepted",
        "vllm:spec_decode_num_accepted_tokens_per_pos_total": "per_position",
        "vllm:generation_tokens_total": "generated",
    },
}
REVISION_INFO = sm.REVISION_INFO
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class ParseError(ValueError):
    """A metrics page that is not in the exposition format."""


@dataclass(frozen=True)
class PodMetrics:
    """One pod's cumulative counters and, for the runtime, the revision and role it serves."""

    counters: Counters
    revision: str | None = None
    role: str | None = None


def parse_exposition(text: str, kind: SourceKind) -> PodMetrics:
    """Return the spec-decode counters in a Prometheus text page (summed over `speculator` labels).

    Raises ParseError naming the line number when a sample line cannot be read.
    """
    names = NAMES[kind]
    sums: dict[str, float] = {}
    per_pos: dict[int, float] = {}
    revision = role = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line or line[0] == "#":
            continue
        if not (line.startswith("adaspec_") or line.startswith("vllm:")):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ParseError(f"line {number}: not a sample: {line[:80]!r}")
        name, labels, raw = m.group(1), m.group(2) or "", m.group(3)
        try:
            value = float(raw)
        except ValueError:
            raise ParseError(f"line {number}: bad value {raw[:40]!r} for {name}") from None
        if math.isnan(value):
            continue
        if name == REVISION_INFO:
            if value >= 1:
                found = dict(_LABEL.findall(labels))
                revision, role = found.get("revision"), found.get("role")
            continue
        field = names.get(name)
        if field is None:
            continue
        if field == "per_position":
            pos = dict(_LABEL.findall(labels)).get("position")
            if pos is None or not pos.isdigit():
                raise ParseError(f"line {number}: {name} without a numeric position label")
            per_pos[int(pos)] = per_pos.get(int(pos), 0.0) + value
        else:
            sums[field] = sums.get(field, 0.0) + value
    width = max(per_pos) + 1 if per_pos else 0
    counters = Counters(
        drafts=sums.get("drafts", 0.0),
        draft_tokens=sums.get("draft_tokens", 0.0),
        accepted=sums.get("accepted", 0.0),
        generated=sums.get("generated", 0.0),
        forward_passes=sums.get("forward_passes", 0.0),
        per_position=tuple(per_pos.get(i, 0.0) for i in range(width)),
    )
    return PodMetrics(counters=counters, revision=revision, role=role)


def _promql(kind: SourceKind, selector: str) -> dict[str, str]:
    sel = "{" + selector + "}"
    queries = {}
    for name, field in NAMES[kind].items():
        by = "pod, position" if field == "per_position" else "pod"
        queries[field] = f"sum by ({by}) ({name}{sel})"
    if kind == "runtime":
        queries["info"] = f"max by (pod, revision, role) ({REVISION_INFO}{sel})"
    return queries


async def query_prometheus(
    base_url: str, selector: str, kind: SourceKind, client: httpx.AsyncClient
) -> dict[str, PodMetrics]:
    """Return cumulative counters per pod from a Prometheus server's instant-query API."""
    fields: dict[str, dict[str, float]] = {}
    per_pos: dict[str, dict[int, float]] = {}
    info: dict[str, tuple[str | None, str | None]] = {}
    for field, query in _promql(kind, selector).items():
        resp = await client.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": query})
        resp.raise_for_status()
        body = resp.json()
        if body.get("status") != "success":
            raise ParseError(f"prometheus: query {query!r} failed: {body.get('error', body)!r}")
        for item in body["data"]["result"]:
            labels, value = item["metric"], float(item["value"][1])
            pod = labels.get("pod", "")
            if field == "info":
                if value >= 1:
                    info[pod] = (labels.get("revision"), labels.get("role"))
            elif field == "per_position":
                per_pos.setdefault(pod, {})[int(labels["position"])] = value
            else:
                fields.setdefault(pod, {})[field] = value
    out = {}
    for pod in set(fields) | set(per_pos):
        f, pp = fields.get(pod, {}), per_pos.get(pod, {})
        width = max(pp) + 1 if pp else 0
        counters = Counters(
            drafts=f.get("drafts", 0.0),
            draft_tokens=f.get("draft_tokens", 0.0),
            accepted=f.get("accepted", 0.0),
            generated=f.get("generated", 0.0),
            forward_passes=f.get("forward_passes", 0.0),
            per_position=tuple(pp.get(i, 0.0) for i in range(width)),
        )
        revision, role = info.get(pod, (None, None))
        out[pod] = PodMetrics(counters=counters, revision=revision, role=role)
    return out
