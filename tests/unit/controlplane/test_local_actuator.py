"""The local actuator: adaptation runs (success, failure, timeout, idempotent start) and revision loads
through the runtime's admin API (body, bearer token, roles, refusals)."""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from adaspec.controlplane.actions import Promote, Rollback, StartCanary, parse_action
from adaspec.controlplane.actuators import REVISION_DIR, LocalActuator, PermanentActionError, execute
from adaspec.controlplane.config import LocalActuatorConfig

WRITE = (
    "import json, sys, pathlib; manifest = {'revision': 'r5', 'metrics': {'acc': 0.8}}; "
    "out = pathlib.Path(sys.argv[1]); out.mkdir(parents=True); "
    "(out / 'manifest.json').write_text(json.dumps(manifest))"
)


def actuator(tmp_path: Path, code: str, timeout_s: float = 60) -> LocalActuator:
    cfg = LocalActuatorConfig(
        adapt_command=[sys.executable, "-c", code, "{out}"], work_dir=tmp_path, run_timeout_s=timeout_s
    )
    return LocalActuator(cfg)


def test_success_reads_the_manifest(tmp_path: Path) -> None:
    act = actuator(tmp_path, WRITE)
    act.start_adaptation("chat", "default", "chat-run1", "r4")
    act.start_adaptation("chat", "default", "chat-run1", "r4")  # retried: not started twice
    act.wait(30)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    assert (st.status, st.revision, st.metrics) == ("succeeded", "r5", {"acc": 0.8})
    assert st.sha256 is not None and len(st.sha256) == 64
    assert (tmp_path / "chat" / "chat-run1" / REVISION_DIR / "manifest.json").exists()
    # a new instance (after a restart) finds the finished run from its directory
    assert actuator(tmp_path, WRITE).poll_adaptation("chat", "default", "chat-run1").revision == "r5"


def test_failure_reports_the_exit_code_and_log(tmp_path: Path) -> None:
    act = actuator(tmp_path, "import sys; print('no captured traffic'); sys.exit(2)")
    act.start_adaptation("chat", "default", "chat-run1", None)
    act.wait(30)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    assert st.status == "failed" and "exit code 2" in st.message and "no captured traffic" in st.message


def test_a_run_the_offline_gate_refused_produced_no_candidate(tmp_path: Path) -> None:
    gated = "print('gate: refused, nothing written:'); print('  - held-out acceptance 0.1 vs 0.2'); exit(3)"
    act = actuator(tmp_path, gated)
    act.start_adaptation("chat", "default", "chat-run1", None)
    act.wait(30)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    assert (st.status, st.revision) == ("failed", None)
    assert st.message == "no candidate: the offline gate refused it: held-out acceptance 0.1 vs 0.2"


def test_a_hanging_run_times_out(tmp_path: Path) -> None:
    act = actuator(tmp_path, "import time; time.sleep(60)", timeout_s=0.0)
    act.start_adaptation("chat", "default", "chat-run1", None)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    act.wait(30)
    assert st.status == "failed" and "timed out" in st.message


# -- loading revisions through the runtime's admin API (docs/CONTRACTS.md "Runtime process") --------------
TOKEN = "runtime-admin-token-0123456789"
SHA = "ab" * 32


@dataclass
class Runtime:
    """A stand-in for `adaspec serve`'s admin API on 127.0.0.1: records each POST, answers `status`."""

    status: int = 200
    answer: dict[str, Any] = field(default_factory=lambda: {"revision": "r5", "sha256": SHA, "version": 2})
    received: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                runtime.received.append((self.path, dict(self.headers.items()), body))
                raw = json.dumps(runtime.answer).encode()
                self.send_response(runtime.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, role: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{role}/admin/v1/revisions/load"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    rt = Runtime()
    yield rt
    rt.close()


def loader(tmp_path: Path, **local: Any) -> LocalActuator:
    (tmp_path / "load-token").write_text(f"# admin token of the runtime\n\n{TOKEN} admin ops\n")
    return LocalActuator(LocalActuatorConfig(load_token_file=tmp_path / "load-token", **local))


def test_start_canary_posts_the_contract_body_with_the_bearer_token(tmp_path: Path, runtime: Runtime) -> None:
    act = loader(tmp_path, load_url=runtime.url("both"))
    act.start_canary("chat", "default", "r5", str(tmp_path / "runs" / "r5"), "r4", sha256=SHA)
    ((path, headers, body),) = runtime.received
    assert path == "/both/admin/v1/revisions/load"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body == {
        "revision": "r5",
        "artifact_uri": (tmp_path / "runs" / "r5").resolve().as_uri(),
        "sha256": SHA,
        "role": "canary",
        "action": "start_canary",
    }


def test_each_role_goes_to_its_own_runtime(tmp_path: Path, runtime: Runtime) -> None:
    act = loader(tmp_path, load_url=runtime.url("both"), load_urls={"canary": runtime.url("canary")})
    act.start_canary("chat", "default", "r5", "file:///runs/r5", "r4", sha256=SHA)
    act.promote("chat", "default", "r5", "file:///runs/r5", "r4", sha256=SHA)
    act.abort_canary("chat", "default", "r6", "worse than stable")
    act.rollback("chat", "default", "r5", "static", None, "regression")
    sent = [
        (path.split("/")[1], body["action"], body["role"], body["revision"])
        for path, _, body in runtime.received
    ]
    assert sent == [
        ("canary", "start_canary", "canary", "r5"),
        ("both", "promote", "stable", "r5"),
        ("canary", "abort_canary", "canary", "static"),  # the rejected revision stops drafting
        ("both", "rollback", "stable", "static"),
    ]
    assert runtime.received[1][2]["artifact_uri"] == "file:///runs/r5"  # a URI is sent as it is
    assert [b["sha256"] for _, _, b in runtime.received] == [SHA, SHA, None, None]
    assert [b["artifact_uri"] for _, _, b in runtime.received[2:]] == [None, None]


def test_a_refusal_is_permanent_and_carries_the_runtimes_message(tmp_path: Path, runtime: Runtime) -> None:
    runtime.status = 409
    runtime.answer = {
        "error": {"message": "tokenizer hash differs", "type": "conflict", "param": "artifact_uri"}
    }
    act = loader(tmp_path, load_url=runtime.url("both"))
    with pytest.raises(
        PermanentActionError,
        match=r"refused promote of r5 \(409\): tokenizer hash differs \(param artifact_uri\)$",
    ):
        act.promote("chat", "default", "r5", "file:///runs/r5", "r4", sha256=SHA)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_error_is_retried(tmp_path: Path, runtime: Runtime, status: int) -> None:
    runtime.status, runtime.answer = status, {"error": {"message": "busy"}}
    act = loader(tmp_path, load_url=runtime.url("both"))
    with pytest.raises(httpx.HTTPStatusError) as info:
        act.start_canary("chat", "default", "r5", "file:///runs/r5", "r4", sha256=SHA)
    assert not isinstance(info.value, PermanentActionError)


def test_a_revision_without_artifact_is_refused_before_sending(tmp_path: Path, runtime: Runtime) -> None:
    act = loader(tmp_path, load_url=runtime.url("both"))
    with pytest.raises(PermanentActionError, match="rollback of r0: no artifact_uri recorded"):
        act.rollback("chat", "default", "r1", "r0", None, "regression")
    assert runtime.received == []


def test_without_a_load_url_nothing_is_sent(tmp_path: Path) -> None:
    act = LocalActuator(LocalActuatorConfig())
    act.rollback("chat", "default", "r1", "r0", None, "regression")  # no URL: skipped, not refused


def test_execute_threads_the_recorded_sha256(tmp_path: Path, runtime: Runtime) -> None:
    act = loader(tmp_path, load_url=runtime.url("both"))
    base = {"speculator": "chat", "namespace": "default", "revision": "r5", "artifact_uri": "file:///r5"}
    execute(act, StartCanary(**base, parent="r4", sha256=SHA))
    execute(act, Promote(**base, previous="r4", sha256=SHA))
    execute(act, Rollback(**base, to_revision="r4", reason="x", sha256="cd" * 32))
    execute(act, parse_action("start_canary", {**base, "parent": "r4"}))  # stored before sha256 was
    assert [b["sha256"] for _, _, b in runtime.received] == [SHA, SHA, "cd" * 32, None]
    assert runtime.received[2][2]["revision"] == "r4"


def test_the_token_file_is_read_at_start(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/load"
    with pytest.raises(ValueError, match="local.load_token_file: cannot read .*missing"):
        LocalActuator(LocalActuatorConfig(load_url=url, load_token_file=tmp_path / "missing"))
    (tmp_path / "empty").write_text("# nothing here\n\n")
    with pytest.raises(ValueError, match="local.load_token_file: .*empty holds no token"):
        LocalActuator(LocalActuatorConfig(load_url=url, load_token_file=tmp_path / "empty"))


def test_poll_reports_the_revision_directory_as_a_file_uri(tmp_path: Path) -> None:
    act = actuator(tmp_path, WRITE)
    act.start_adaptation("chat", "default", "chat-run1", None)
    act.wait(30)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    out = tmp_path / "chat" / "chat-run1" / REVISION_DIR
    assert st.artifact_uri == out.resolve().as_uri()
    assert st.sha256 == hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
