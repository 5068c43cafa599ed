"""The Prometheus source: counters per pod from the instant-query API of a (fake) Prometheus server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from adaspec.controlplane.config import Settings
from adaspec.controlplane.store.models import MetricSample, ScrapeTarget
from adaspec.controlplane.wiring import build, open_store

from .scenario import T0, at


class FakePrometheus:
    """Answers `sum by (pod) (...)` queries from per-pod counters the test advances."""

    def __init__(self) -> None:
        self.pods: dict[str, dict[str, float]] = {"chat-0": {}, "chat-1": {}}
        self.queries: list[str] = []
        self.step(0)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)["query"][0]
                fake.queries.append(query)
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": fake.answer(query)}}
                )
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def step(self, n: int) -> None:
        for i, pod in enumerate(self.pods):
            d = 1000.0 * n * (i + 1)
            self.pods[pod] = {"drafts": d, "draft_tokens": 4 * d, "accepted": 2.8 * d, "generated": 3.8 * d}

    def answer(self, query: str) -> list[dict[str, Any]]:
        out = []
        for pod, c in self.pods.items():
            if "adaspec_revision_info" in query:
                out.append({"metric": {"pod": pod, "revision": "r0", "role": "stable"}, "value": [0, "1"]})
            elif "per_pos" in query:
                out.append({"metric": {"pod": pod, "position": "0"}, "value": [0, str(c["accepted"] / 2)]})
            else:
                field = {
                    "num_drafts_total": "drafts",
                    "num_draft_tokens_total": "draft_tokens",
                    "num_accepted_tokens_total": "accepted",
                    "generation_tokens_total": "generated",
                }
                for name, key in field.items():
                    if name in query:
                        out.append({"metric": {"pod": pod}, "value": [0, str(c[key])]})
        return out


@pytest.fixture
def prom() -> Iterator[FakePrometheus]:
    p = FakePrometheus()
    yield p
    p.server.shutdown()
    p.server.server_close()


def test_counters_per_pod_from_prometheus(prom: FakePrometheus, tmp_path: Path) -> None:
    st = Settings.model_validate(
        {
            "actuator": "none",
            "speculators": [
                {
                    "name": "chat",
                    "source": "prometheus",
                    "prometheus_url": prom.url,
                    "prometheus_selector": 'namespace="ml",speculator_name="chat"',
                }
            ],
        }
    )
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    cp = build(st, store, clock=lambda: T0)
    for minute in range(3):
        prom.step(minute)
        assert cp.scrape(at(minute)) == 2
    with store.factory() as s:
        samples = list(s.execute(select(MetricSample).order_by(MetricSample.id)).scalars())
        targets = sorted(t.url for t in s.execute(select(ScrapeTarget)).scalars())
    store.close()
    assert targets == [f"{prom.url}#pod=chat-0", f"{prom.url}#pod=chat-1"]
    assert sorted((m.target.rsplit("=", 1)[1], m.draft_tokens, m.revision) for m in samples) == [
        ("chat-0", 4000, "r0"),
        ("chat-0", 4000, "r0"),
        ("chat-1", 8000, "r0"),
        ("chat-1", 8000, "r0"),
    ]
    assert all(m.accepted / m.draft_tokens == pytest.approx(0.7) for m in samples)
    assert any(
        'sum by (pod) (adaspec_spec_decode_num_draft_tokens_total{namespace="ml"' in q for q in prom.queries
    )


def test_prometheus_down_is_one_recorded_error(tmp_path: Path) -> None:
    st = Settings.model_validate(
        {
            "actuator": "none",
            "speculators": [{"name": "chat", "source": "prometheus", "prometheus_url": "http://127.0.0.1:1"}],
        }
    )
    store = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    cp = build(st, store, clock=lambda: T0)
    assert cp.scrape(T0) == 0
    with store.factory() as s:
        target = s.execute(select(ScrapeTarget)).scalar_one()
    store.close()
    assert target.errors == 1 and "ConnectError" in (target.last_error or "")
