"""The HTTP API: auth and scopes, bad input, manual operations, the decision log, its own metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from adaspec.controlplane.actuators import NullActuator
from adaspec.controlplane.api import create_app
from adaspec.controlplane.auth import TokenFile
from adaspec.controlplane.config import Settings
from adaspec.controlplane.wiring import build, open_store

from .scenario import T0

ADMIN, READER = "admin-token-0123456789", "read-token-0123456789"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# test tokens\n{ADMIN} admin alice\n{READER} read bob\n")
    st = Settings.model_validate(
        {
            "speculators": [{"name": "chat", "endpoints": [{"url": "http://127.0.0.1:1/metrics"}]}],
            "actuator": "none",
        }
    )
    store = open_store(f"sqlite:///{tmp_path / 'api.db'}")
    cp = build(st, store, actuator=NullActuator(), clock=lambda: T0)
    with TestClient(create_app(cp, TokenFile.load(tokens), max_body_bytes=4096)) as c:
        yield c
    store.close()


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_openapi_and_metrics_are_public(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/speculators/{name}/promote" in paths and "/api/v1/decisions" in paths
    assert "adaspec_controlplane_decisions_total" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), (h("wrong-token-0123456789"), 401), ({"Authorization": "Basic abc"}, 401), (h(READER), 200)],
)
def test_read_needs_a_valid_token(client: TestClient, headers: dict[str, str], status: int) -> None:
    assert client.get("/api/v1/speculators", headers=headers).status_code == status


def test_read_scope_cannot_act(client: TestClient) -> None:
    r = client.post("/api/v1/speculators/chat/pause", json={}, headers=h(READER))
    assert r.status_code == 403 and "bob" in r.json()["detail"]


def test_unknown_speculator_is_404(client: TestClient) -> None:
    assert client.get("/api/v1/speculators/nope", headers=h(READER)).status_code == 404
    assert client.post("/api/v1/speculators/nope/pause", json={}, headers=h(ADMIN)).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("pause", {"reasn": "typo"}, "reasn"),
        ("promote", {"revision": "Not A Name!"}, "revision"),
        ("revisions", {"revision": "r1", "sha256": "xyz"}, "sha256"),
        ("revisions", {"artifact_uri": "s3://x"}, "revision"),
        ("revisions", {"revision": "r1", "metrics": {"acc": "high"}}, "metrics"),
    ],
)
def test_malformed_bodies_name_the_field(
    client: TestClient, path: str, body: dict[str, object], field: str
) -> None:
    r = client.post(f"/api/v1/speculators/chat/{path}", json=body, headers=h(ADMIN))
    assert r.status_code == 422
    assert any(field in [str(p) for p in e["loc"]] for e in r.json()["detail"]), r.json()


def test_oversized_body_is_413(client: TestClient) -> None:
    r = client.post("/api/v1/speculators/chat/pause", json={"reason": "x" * 5000}, headers=h(ADMIN))
    assert r.status_code == 413


def test_manual_operations_are_audited(client: TestClient) -> None:
    a = h(ADMIN)
    assert (
        client.post("/api/v1/speculators/chat/pause", json={"reason": "maintenance"}, headers=a).json()[
            "kind"
        ]
        == "pause"
    )
    assert client.get("/api/v1/speculators/chat", headers=a).json()["phase"] == "paused"
    assert client.post("/api/v1/speculators/chat/pause", json={}, headers=a).status_code == 409
    assert client.post("/api/v1/speculators/chat/resume", json={}, headers=a).json()["inputs"] == {
        "to": "steady"
    }
    assert (
        client.post("/api/v1/speculators/chat/rollback", json={}, headers=a).status_code == 409
    )  # r0 has no parent
    r = client.post(
        "/api/v1/speculators/chat/revisions", json={"revision": "r1", "metrics": {"acc": 0.8}}, headers=a
    )
    assert r.status_code == 201
    assert (
        client.post("/api/v1/speculators/chat/promote", json={"revision": "r9"}, headers=a).status_code == 404
    )
    assert (
        client.post("/api/v1/speculators/chat/promote", json={"revision": "r1"}, headers=a).json()["kind"]
        == "start_canary"
    )
    assert client.get("/api/v1/speculators/chat", headers=a).json()["canaryRevision"] == "r1"
    assert client.post("/api/v1/speculators/chat/promote", json={}, headers=a).json()["kind"] == "promote"
    assert (
        client.post("/api/v1/speculators/chat/rollback", json={"reason": "by hand"}, headers=a).json()["kind"]
        == "rollback"
    )
    log = client.get("/api/v1/decisions", params={"speculator": "chat"}, headers=h(READER)).json()["items"]
    assert [(d["kind"], d["actor"]) for d in log] == [
        ("pause", "api:alice"),
        ("resume", "api:alice"),
        ("start_canary", "api:alice"),
        ("promote", "api:alice"),
        ("rollback", "api:alice"),
    ]
    revs = client.get("/api/v1/speculators/chat/revisions", headers=h(READER)).json()["items"]
    assert {r["revision"]: r["phase"] for r in revs} == {"static": "Promoted", "r1": "RolledBack"}
    assert [x["phase"] for x in revs[1]["history"]] == ["Candidate", "Canary", "Promoted", "RolledBack"]
    assert (
        'adaspec_controlplane_actions_total{kind="rollback",result="ok"} 1.0' in client.get("/metrics").text
    )
    assert client.get("/api/v1/speculators/chat/metrics", headers=h(READER)).json() == {"items": []}
