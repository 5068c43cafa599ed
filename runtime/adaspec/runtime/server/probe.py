"""Waiting for a started `serve` (or `up`) process to answer `GET /health` 200; torch-free."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def _tail(log: Path, chars: int) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def healthy(url: str, proc: subprocess.Popen[bytes], log: Path, what: str) -> bool:
    """Whether `url`/health answers 200 now; RuntimeError with the log's tail once `proc` has exited."""
    if proc.poll() is not None:
        raise RuntimeError(f"{what} exited with {proc.returncode} (log {log}):\n{_tail(log, 3000)}")
    try:
        return httpx.get(url.rstrip("/") + "/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], log: Path, what: str, timeout_s: float, interval_s: float = 0.3
) -> None:
    """Wait until `url`/health answers 200; RuntimeError if `proc` exits first, TimeoutError after
    `timeout_s` (both with the log's tail)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if healthy(url, proc, log, what):
            return
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s (log {log}):\n{_tail(log, 3000)}")
