"""Concurrent clients on the shared server: no errors, exact usage and metrics; cancel on disconnect."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .serving import Serving

CLIENTS = 32
PER_CLIENT = 2
MAX_TOKENS = 8
PROMPTS = ["def add(a, b):\n", "import os\n", "class Point:\n", "for i in range(", "func main() {\n"]


def _samples(served: Serving, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name` on the metrics page, keyed by its labels."""
    text = httpx.get(served.metrics_url, timeout=10).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _successes(served: Serving) -> dict[str, float]:
    """adaspec_request_success_total by finished_reason."""
    return {
        dict(k)["finished_reason"]: v for k, v in _samples(served, "adaspec_request_success_total").items()
    }


def _waiting(served: Serving) -> float:
    return sum(_samples(served, "adaspec_num_requests_waiting").values())


@pytest.fixture(scope="module")
def api(served: Serving) -> Iterator[openai.OpenAI]:
    with served.openai(timeout=300) as client:
        yield client


def _one(api: openai.OpenAI, prompt: str, stream: bool, seed: int) -> tuple[str, int, int]:
    """One request; return (finish_reason, usage.completion_tokens, token ids actually received)."""
    extra = {"return_token_ids": True}
    if not stream:
        out = api.completions.create(
            model="fixture",
            prompt=prompt,
            max_tokens=MAX_TOKENS,
            temperature=0.7,
            seed=seed,
            extra_body=extra,
        )
        choice = out.choices[0]
        assert out.usage is not None
        return str(choice.finish_reason), out.usage.completion_tokens, len(choice.model_extra["token_ids"])
    finish, usage, ids = None, None, 0
    for chunk in api.completions.create(
        model="fixture",
        prompt=prompt,
        max_tokens=MAX_TOKENS,
        temperature=0.7,
        seed=seed,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra,
    ):
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        for c in chunk.choices:
            ids += len((c.model_extra or {}).get("token_ids", []))
            finish = c.finish_reason or finish
    assert usage is not None, "no usage chunk"
    return str(finish), usage, ids


def test_concurrent_clients(served: Serving, api: openai.OpenAI) -> None:
    before = _successes(served)
    results: list[tuple[str, int, int] | BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(i: int) -> None:
        start.wait()
        for k in range(PER_CLIENT):
            try:
                r: tuple[str, int, int] | BaseException = _one(
                    api, PROMPTS[(i + k) % len(PROMPTS)], stream=(i + k) % 2 == 0, seed=i * 10 + k
                )
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                r = exc
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not any(t.is_alive() for t in threads), "a client hung"
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:3]
    assert len(results) == CLIENTS * PER_CLIENT
    for r in results:
        assert not isinstance(r, BaseException)
        finish, usage, ids = r
        assert finish in ("length", "stop"), r
        assert usage == ids, r  # usage counts exactly the tokens sent
        assert (usage == MAX_TOKENS) if finish == "length" else (0 <= usage <= MAX_TOKENS), r

    after = _successes(served)
    added = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    assert sum(added.values()) == CLIENTS * PER_CLIENT, added
    assert added.get("cancelled", 0.0) == 0, added
    by_reason: dict[str, int] = {}
    for r in results:
        assert not isinstance(r, BaseException)
        by_reason[r[0]] = by_reason.get(r[0], 0) + 1
    assert {k: v for k, v in added.items() if v} == by_reason
    assert _waiting(served) == 0


def test_disconnect_mid_stream_cancels_the_request(served: Serving, api: openai.OpenAI) -> None:
    before = _successes(served).get("cancelled", 0.0)
    body: dict[str, Any] = {
        "model": "fixture",
        "prompt": "def main():\n",
        "max_tokens": 900,  # far longer than the test waits
        "temperature": 0.8,
        "seed": 7,
        "stream": True,
        "return_token_ids": True,
    }
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", served.url + "/v1/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        first = next(line for line in resp.iter_lines() if line.startswith("data: "))
        assert '"token_ids"' in first
    # the connection is closed: the server stops decoding within a step or two
    deadline = time.monotonic() + 60
    while _successes(served).get("cancelled", 0.0) < before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _successes(served).get("cancelled", 0.0) == before + 1
    out = api.completions.create(model="fixture", prompt="import os\n", max_tokens=4, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop")
    assert _waiting(served) == 0
