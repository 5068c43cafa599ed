"""Test harness: `adaspec serve` as a real process on loopback, and what tests need around it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaspec.runtime.server.probe import wait_healthy

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_chat_template(model_dir: Path, out: Path) -> Path:
    """A copy of a model directory whose tokenizer has a chat template (the fixtures have none)."""
    if not out.exists():
        shutil.copytree(model_dir, out)
        cfg_path = out / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["chat_template"] = CHAT_TEMPLATE
        cfg_path.write_text(json.dumps(cfg))
    return out


@dataclass
class Serving:
    """One running `adaspec serve`."""

    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    token: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def openai(self, **kwargs: Any) -> Any:
        """The real openai client bound to this server."""
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, **kwargs)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Wait until /health answers 200; raise with the log's tail if the process exits first."""
        wait_healthy(self.url, self.proc, self.log, "serve", timeout)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def adaspec() -> list[str]:
    """The command line of this checkout's `adaspec`."""
    return [sys.executable, "-m", "adaspec.cli.main"]


def start_serve(workdir: Path, *args: str, wait: bool = True) -> Serving:
    """Start `adaspec serve ARGS` on free loopback ports with a token file in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = "test-admin-" + os.urandom(8).hex()
    token_file = workdir / "admin-tokens"
    token_file.write_text(f"# admin\n{token}\n")
    token_file.chmod(0o600)
    port, metrics_port = free_port(), free_port()
    log = workdir / f"serve-{port}.log"
    cmd = [
        *adaspec(),
        "serve",
        f"--port={port}",
        f"--metrics-port={metrics_port}",
        f"--admin-token-file={token_file}",
        *args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    s = Serving(proc, port, metrics_port, token, log)
    if wait:
        try:
            s.wait_ready()
        except BaseException:
            s.stop()
            raise
    return s


def make_revision(fixture_dir: Path, out: Path, revision: str, *, parent: str | None = "static") -> Path:
    """Write the fixture draft as revision `revision` into `out` (a revision directory); return `out`."""
    from adaspec.runtime.artifacts import save_revision
    from adaspec.runtime.models import load_causal_lm, tokenizer_fingerprint

    save_revision(
        load_causal_lm(fixture_dir / "draft", "draft"),
        out,
        revision=revision,
        parent=parent,
        target_model="fixture",
        tokenizer_sha256=tokenizer_fingerprint(fixture_dir / "target"),
    )
    return out
