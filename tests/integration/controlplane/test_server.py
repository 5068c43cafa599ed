"""`adaspec control-plane` as a real process: uvicorn, scheduler, token auth (given or generated), clean
shutdown, bad start."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from .fleet import Fleet
from .pg import free_port

TOKEN = "server-admin-token-0123456789"


def wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "server did not come up"
        time.sleep(0.1)


def test_serves_schedules_and_stops(tmp_path: Path) -> None:
    fleet = Fleet(lambda revision, role, minute: 0.7)
    port = free_port()
    (tmp_path / "tokens").write_text(f"{TOKEN} admin ops\n")
    config = {
        "db_url": f"sqlite:///{tmp_path / 'cp.db'}",
        "scrape_interval_s": 0.2,
        "evaluate_interval_s": 0.5,
        "lease_ttl_s": 3,
        "actuator": "none",
        "auth": {"mode": "token-file", "token_file": str(tmp_path / "tokens")},
        "speculators": [{"name": "chat", "endpoints": [{"url": fleet.url("stable")}]}],
    }
    (tmp_path / "cp.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "adaspec.cli.main", "control-plane", "--config", str(tmp_path / "cp.yaml")]
    proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        assert httpx.get(f"{base}/api/v1/speculators").status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 20
        while True:  # the leader's scrape job fills the metrics table
            fleet.advance(0)
            items = httpx.get(f"{base}/api/v1/speculators/chat/metrics", headers=auth).json()["items"]
            if any(i["draftTokens"] > 0 for i in items):
                break
            assert time.monotonic() < deadline, "no samples scraped"
            time.sleep(0.2)
        assert {i["revision"] for i in items} == {"r0"}
        page = httpx.get(f"{base}/metrics").text
        assert "adaspec_controlplane_leader 1.0" in page
        assert 'adaspec_controlplane_job_duration_seconds_count{job="scrape"}' in page
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        fleet.close()
    # uvicorn re-raises the SIGTERM after its graceful shutdown, in which the lease was handed over
    assert proc.returncode in (0, -signal.SIGTERM), out.decode()[-2000:]
    assert "event=stopped lease=released" in out.decode()
    assert TOKEN not in out.decode()


def test_database_down_at_start_is_a_clear_error() -> None:
    url = "postgresql+psycopg://cp:hunter2@127.0.0.1:1/adaspec"
    cmd = [sys.executable, "-m", "adaspec.cli.main", "control-plane", "--db", url, "--db-attempts", "2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "unreachable after 2 attempts" in res.stderr and "127.0.0.1:1/adaspec" in res.stderr
    assert "hunter2" not in res.stderr + res.stdout


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "cp.yaml").write_text("policies:\n  canary:\n    intervl_s: 5\n")
    cmd = [sys.executable, "-m", "adaspec.cli.main", "control-plane", "--config", str(tmp_path / "cp.yaml")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "policies.canary.intervl_s" in res.stderr


def test_embedded_default_generates_an_admin_token_and_reuses_it(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"  # beside the SQLite file
    outs, tokens = [], []
    for _ in range(2):  # the second start is a restart: same file, same token
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "adaspec.cli.main",
            "control-plane",
            "--db",
            f"sqlite:///{tmp_path}/cp.db",
        ]
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}/api/v1/speculators"
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            lines = [ln for ln in token_file.read_text().splitlines() if not ln.startswith("#")]
            tokens.append(lines[0].split()[0])
            assert httpx.get(url).status_code == 401
            assert (
                httpx.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
            )
            ok = httpx.get(url, headers={"Authorization": f"Bearer {tokens[-1]}"})
            assert ok.status_code == 200 and ok.json() == {"items": []}
        finally:
            proc.send_signal(signal.SIGTERM)
            outs.append(proc.communicate(timeout=30)[0].decode())
    assert tokens[0] == tokens[1]
    assert f"event=admin_token_generated path={token_file}" in outs[0]
    assert f"event=admin_token_reused path={token_file}" in outs[1]
    assert all(tokens[0] not in out for out in outs)
