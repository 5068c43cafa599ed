"""Test harness: `adaspec up` as a real process, its front endpoint and the control plane's API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from adaspec.controlplane.actuators import read_token
from adaspec.runtime.server.probe import wait_healthy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Up:
    """One running `adaspec up`."""

    proc: subprocess.Popen[bytes]
    port: int
    state: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        return dict(json.loads((self.state / "up.json").read_text()))

    def token(self) -> str:
        return read_token(self.state / "admin-token")

    def api(self, path: str, **params: Any) -> Any:
        """GET the control plane's `path` with the generated admin token; return the JSON."""
        r = httpx.get(
            self.url + path, params=params, headers={"Authorization": f"Bearer {self.token()}"}, timeout=10
        )
        r.raise_for_status()
        return r.json()

    def decisions(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/decisions", limit=200)["items"])

    def serving(self, role: str) -> dict[str, Any]:
        """The runtime `role`'s `GET /admin/v1/revisions` (with the runtimes' generated token)."""
        url = self.info()["runtimes"][role]["url"]
        token = read_token(self.state / "runtime-admin-token")
        r = httpx.get(url + "/admin/v1/revisions", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        r.raise_for_status()
        return dict(r.json())

    def openai(self) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> None:
        wait_healthy(self.url, self.proc, self.log, "up", timeout, interval_s=0.5)

    def stop(self, timeout: float = 90.0) -> int:
        """SIGTERM, wait; kill what is left (up and its runtimes); return up's exit code."""
        pids: list[int] = []
        try:
            pids = [int(r["pid"]) for r in self.info()["runtimes"].values() if r.get("pid")]
        except (OSError, ValueError, KeyError):
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        for pid in pids:  # normally stopped by up already: this only cleans up after a failure
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return code


def start_up(workdir: Path, settings: dict[str, Any], timeout: float = 300.0) -> Up:
    """Start `adaspec up --config` with `settings` (empty: the config written before) on a free port;
    wait until its endpoint answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "up.yaml"
    if settings or not config.exists():
        config.write_text(yaml.safe_dump(settings))
    port = free_port()
    log = workdir / f"up-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "adaspec.cli.main",
        "up",
        f"--config={config}",
        f"--state-dir={workdir / 'state'}",
        f"--port={port}",
    ]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    up = Up(proc, port, workdir / "state", log)
    try:
        up.wait_ready(timeout)
    except BaseException:
        up.stop()
        raise
    return up


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Return `check()` once truthy; TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(every)


def loop_settings(fixture_dir: Path) -> dict[str, Any]:
    """`adaspec up` settings of the closed loop on the fixtures: the demo's (`adaspec demo --fixtures`)."""
    from adaspec.runtime.demo.settings import demo_settings

    return demo_settings(fixture_dir / "target", fixture_dir / "draft", fixtures=True)
