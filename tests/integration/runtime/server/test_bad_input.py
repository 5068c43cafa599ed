"""Bad input gets the OpenAI error shape with the right status and `param`, and the server serves on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from .serving import Serving, start_serve

PROMPT = "def add(a, b):\n    return"
ERROR_KEYS = {"message", "type", "param", "code"}


def _error(resp: httpx.Response, status: int, param: str | None, kind: str | None = None) -> str:
    """Check an error response's status and OpenAI shape; return its message."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == ERROR_KEYS, err
    assert err["param"] == param, err
    assert err["code"] is None
    assert isinstance(err["message"], str) and err["message"]
    if kind is not None:
        assert err["type"] == kind, err
    return str(err["message"])


def _api_error(exc: openai.APIStatusError, status: int, param: str | None, kind: str) -> str:
    """The same checks on what the openai client raised (its `body` is the inner `error` object)."""
    assert exc.status_code == status
    assert isinstance(exc.body, dict) and set(exc.body) == ERROR_KEYS, exc.body
    assert exc.body["param"] == param, exc.body
    assert exc.body["type"] == kind, exc.body
    return str(exc.body["message"])


def _still_serves(client: openai.OpenAI, chat: bool = False) -> None:
    """A good request right after a bad one succeeds."""
    if chat:
        out: Any = client.chat.completions.create(
            model="fixture", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
        )
    else:
        out = client.completions.create(model="fixture", prompt=PROMPT, max_tokens=3, temperature=0)
    assert out.choices[0].finish_reason in ("length", "stop")
    assert 1 <= out.usage.completion_tokens <= 3


def _post(s: Serving, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(s.url + path, json=body, timeout=60, **kwargs)


def _max_model_len(s: Serving) -> int:
    models = httpx.get(s.url + "/v1/models", timeout=10).json()["data"]
    assert len(models) == 1
    return int(models[0]["max_model_len"])


@pytest.fixture(scope="module")
def api(served: Serving) -> Iterator[openai.OpenAI]:
    """One openai client for the module (closed at the end: warnings are errors)."""
    with served.openai() as client:
        yield client


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", "ten"),
        ("max_tokens", 2.5),
        ("temperature", "hot"),
        ("stream", "yes"),
        ("stream", 1),
        ("seed", "42"),
        ("top_k", 1.5),
    ],
)
def test_bad_types_name_the_field(served: Serving, api: openai.OpenAI, field: str, value: Any) -> None:
    body = {"model": "fixture", "prompt": PROMPT, "max_tokens": 4, field: value}
    msg = _error(_post(served, "/v1/completions", body), 400, field, "invalid_request_error")
    assert msg.startswith(f"{field}: ")
    _still_serves(api)


def test_bad_types_through_the_openai_client(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        api.completions.create(
            model="fixture",
            prompt=PROMPT,
            max_tokens="ten",  # type: ignore[arg-type]
        )
    _api_error(info.value, 400, "max_tokens", "invalid_request_error")
    _still_serves(api)


@pytest.mark.parametrize("max_tokens", [0, -1])
def test_max_tokens_not_positive(api: openai.OpenAI, max_tokens: int) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        api.completions.create(model="fixture", prompt=PROMPT, max_tokens=max_tokens)
    msg = _api_error(info.value, 400, "max_tokens", "invalid_request_error")
    assert f"got {max_tokens}" in msg
    _still_serves(api)


def test_max_completion_tokens_is_named_when_it_is_the_one_sent(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(
            model="fixture", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=0
        )
    _api_error(info.value, 400, "max_completion_tokens", "invalid_request_error")
    _still_serves(api, chat=True)


def test_prompt_plus_max_tokens_over_the_models_positions(served: Serving, api: openai.OpenAI) -> None:
    limit = _max_model_len(served)
    ids = [5] * 40
    with pytest.raises(openai.BadRequestError) as info:
        api.completions.create(model="fixture", prompt=ids, max_tokens=limit - 39)
    msg = _api_error(info.value, 400, "max_tokens", "invalid_request_error")
    assert f"model's {limit} positions" in msg
    # exactly filling the positions is fine
    out = api.completions.create(model="fixture", prompt=[5] * (limit - 2), max_tokens=2, temperature=0)
    assert out.usage.prompt_tokens == limit - 2


def test_prompt_filling_every_position_without_max_tokens(served: Serving, api: openai.OpenAI) -> None:
    limit = _max_model_len(served)
    msg = _error(_post(served, "/v1/completions", {"prompt": [5] * limit}), 400, "prompt")
    assert f"fills the model's {limit} positions" in msg
    _still_serves(api)


@pytest.mark.parametrize("prompt", ["", []])
def test_empty_prompt(api: openai.OpenAI, prompt: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        api.completions.create(model="fixture", prompt=prompt, max_tokens=4)
    msg = _api_error(info.value, 400, "prompt", "invalid_request_error")
    assert "empty" in msg
    _still_serves(api)


def test_prompt_token_ids_out_of_vocabulary(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        api.completions.create(model="fixture", prompt=[1, 10**6], max_tokens=4)
    _api_error(info.value, 400, "prompt", "invalid_request_error")
    _still_serves(api)


def test_more_than_one_prompt(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        api.completions.create(model="fixture", prompt=["a", "b"], max_tokens=4)
    _api_error(info.value, 400, "prompt", "invalid_request_error")
    _still_serves(api)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": 1}, "logprobs"),
        ({"echo": True}, "echo"),
        ({"best_of": 3}, "best_of"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"temperature": -1}, "temperature"),
    ],
)
def test_options_this_server_cannot_honour(api: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        api.completions.create(model="fixture", prompt=PROMPT, max_tokens=4, **extra)
    _api_error(info.value, 400, param, "invalid_request_error")
    _still_serves(api)


def test_chat_logprobs_and_tools_are_refused(api: openai.OpenAI) -> None:
    client = api
    messages: Any = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fixture", messages=messages, logprobs=True)
    _api_error(info.value, 400, "logprobs", "invalid_request_error")
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="fixture", messages=messages, tools=tools)
    _api_error(info.value, 400, "tools", "invalid_request_error")
    _still_serves(api, chat=True)


def test_unknown_model_is_404(api: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        api.completions.create(model="gpt-4", prompt=PROMPT, max_tokens=4)
    msg = _api_error(info.value, 404, "model", "not_found_error")
    assert "'gpt-4'" in msg and "'fixture'" in msg
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    _still_serves(api)


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"[1, 2]", b'{"prompt": "a"', b"\xff\xfe", b'"just a string"']
)
def test_malformed_json_is_400(served: Serving, api: openai.OpenAI, raw: bytes) -> None:
    resp = httpx.post(
        served.url + "/v1/completions",
        content=raw,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    _error(resp, 400, None, "invalid_request_error")
    _still_serves(api)


def test_missing_required_field_is_named(served: Serving, api: openai.OpenAI) -> None:
    _error(_post(served, "/v1/completions", {"model": "fixture"}), 400, "prompt")
    _error(_post(served, "/v1/chat/completions", {"model": "fixture"}), 400, "messages")
    _error(_post(served, "/v1/chat/completions", {"messages": []}), 400, "messages")
    _still_serves(api)


def test_body_over_the_default_limit_is_413(served: Serving, api: openai.OpenAI) -> None:
    """The shared server runs with the default --max-body-bytes (1 MiB)."""
    body = {"model": "fixture", "prompt": "x" * ((1 << 20) + 10), "max_tokens": 1}
    _error(_post(served, "/v1/completions", body), 413, None, "too_large")
    _still_serves(api)


def test_admin_endpoints_need_the_token(served: Serving) -> None:
    load = {"revision": "r1", "artifact_uri": "/nonexistent"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": served.token}):
        resp = httpx.get(served.url + "/admin/v1/revisions", headers=headers, timeout=10)
        _error(resp, 401, None, "authentication_error")
        assert resp.headers["www-authenticate"] == "Bearer"
        _error(_post(served, "/admin/v1/revisions/load", load, headers=headers), 401, None)
    listing = httpx.get(served.url + "/admin/v1/revisions", headers=served.admin(), timeout=10)
    assert listing.status_code == 200
    assert listing.json()["serving"]["revision"] == "static"


def test_admin_load_of_a_missing_directory_is_404(
    served: Serving, api: openai.OpenAI, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-revision"
    body = {"revision": "r1", "artifact_uri": f"file://{missing}"}
    resp = _post(served, "/admin/v1/revisions/load", body, headers=served.admin())
    msg = _error(resp, 404, "artifact_uri", "not_found_error")
    assert str(missing) in msg
    listing = httpx.get(served.url + "/admin/v1/revisions", headers=served.admin(), timeout=10).json()
    assert listing["serving"]["revision"] == "static"  # nothing was swapped
    _still_serves(api)


@pytest.mark.parametrize("revision", ["R1", "r_1", "-r1", "r1-", "a" * 64, "r1/../x", ""])
def test_admin_load_of_a_non_dns_revision_id_is_400(served: Serving, revision: str) -> None:
    body = {"revision": revision, "artifact_uri": "/tmp"}
    _error(_post(served, "/admin/v1/revisions/load", body, headers=served.admin()), 400, "revision")


def test_admin_load_with_an_unknown_field_is_400(served: Serving) -> None:
    body = {"revision": "r1", "artifact_uri": "/tmp", "force": True}
    _error(_post(served, "/admin/v1/revisions/load", body, headers=served.admin()), 400, "force")


# -- a dedicated server: target alone, no chat template, small limits ----------------------------------


@pytest.fixture(scope="module")
def strict(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A target-only server on the template-less fixture with --max-queue=1 and --max-body-bytes=2048.

    Started without waiting, so the first thing it shows is the loading state: the 503 answers seen
    then are recorded here for the test that checks them.
    """
    s = start_serve(
        tmp_path_factory.mktemp("strict"),
        f"--target-model={fixture_dir / 'target'}",
        "--strategy=target-only",
        "--served-model-name=fixture",
        "--max-queue=1",
        "--max-body-bytes=2048",
        wait=False,
    )
    seen: dict[str, Any] = {"server": s, "api": s.openai()}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "health" not in seen:
            assert s.proc.poll() is None, s.log_text()[-3000:]
            try:
                resp = httpx.get(s.url + "/health", timeout=2)
            except httpx.TransportError:  # not listening yet
                time.sleep(0.02)
                continue
            seen["health"] = resp
            seen["completion"] = _post(s, "/v1/completions", {"prompt": PROMPT, "max_tokens": 2})
        s.wait_ready()
        yield seen
    finally:
        seen["api"].close()
        assert s.stop() == 0, s.log_text()[-2000:]


def test_503_while_loading(strict: dict[str, Any]) -> None:
    health: httpx.Response = strict["health"]
    assert health.status_code == 503
    assert health.json() == {"status": "loading"}
    completion: httpx.Response = strict["completion"]
    msg = _error(completion, 503, None, "service_unavailable")
    assert "loading" in msg
    assert completion.headers["retry-after"] == "5"
    s: Serving = strict["server"]
    assert httpx.get(s.url + "/health", timeout=5).json() == {"status": "ok"}
    _still_serves(strict["api"])


def test_chat_without_a_chat_template_is_400(strict: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        strict["api"].chat.completions.create(
            model="fixture", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    msg = _api_error(info.value, 400, "messages", "invalid_request_error")
    assert "no chat template" in msg and "/v1/completions" in msg
    _still_serves(strict["api"])


def test_body_over_max_body_bytes_is_413(strict: dict[str, Any]) -> None:
    s: Serving = strict["server"]
    body = {"model": "fixture", "prompt": "x" * 3000, "max_tokens": 1}
    msg = _error(_post(s, "/v1/completions", body), 413, None, "too_large")
    assert "2048" in msg
    # without a content-length (chunked): the limit holds while reading
    chunks = iter([b'{"prompt": "', b"x" * 1500, b"x" * 1500, b'"}'])
    resp = httpx.post(
        s.url + "/v1/completions", content=chunks, headers={"content-type": "application/json"}, timeout=30
    )
    _error(resp, 413, None, "too_large")
    _still_serves(strict["api"])


def test_429_with_retry_after_when_the_queue_is_full(strict: dict[str, Any]) -> None:
    """--max-queue=1: of 8 concurrent long requests one runs, one waits, the rest are refused."""
    client = strict["api"]
    start = threading.Barrier(8)
    results: list[Any] = [None] * 8

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = client.completions.create(
                model="fixture", prompt=[5 + i, 7, 9], max_tokens=96, temperature=0.8, seed=i
            )
        except openai.APIError as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    served_ok = [r for r in results if not isinstance(r, Exception)]
    assert len(refused) >= 1, results
    assert len(refused) + len(served_ok) == 8, [r for r in results if r not in refused + served_ok]
    for exc in refused:
        msg = _api_error(exc, 429, None, "rate_limit_error")
        assert "--max-queue 1" in msg
        assert exc.response.headers["retry-after"] == "1"
    for out in served_ok:
        assert out.choices[0].finish_reason in ("length", "stop")
    _still_serves(strict["api"])
