"""Harness of the Kubernetes loop test: the control plane as a restartable process, and a client that stands
in for kube-proxy (it sends each request to one ready runtime pod of the speculator, in turn)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from adaspec.controlplane.discovery import pod_selector


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


class ControlPlaneProcess:
    """`adaspec control-plane` with a settings file, as the control plane's ServiceAccount (its kubeconfig),
    restartable over the same SQLite store."""

    def __init__(self, settings: dict[str, Any], workdir: Path, env: dict[str, str], port: int) -> None:
        self.workdir, self.env, self.port = workdir, env, port
        self.config = workdir / "settings.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.log = workdir / "control-plane.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [
            sys.executable,
            "-m",
            "adaspec.cli.main",
            "control-plane",
            f"--config={self.config}",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited {self.proc.returncode}:\n{self.tail()}")
            try:
                return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the control plane's /healthz", healthy, timeout, every=0.3)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        code, self.proc = self.proc.returncode, None
        return code

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Fleet:
    """What a user of the speculator sees: kubectl, the control plane's API, the runtime pods."""

    def __init__(self, cluster: Any, namespace: str, name: str, cp: ControlPlaneProcess, token: str) -> None:
        self.cluster, self.ns, self.name, self.cp, self.token = cluster, namespace, name, cp, token

    # -- kubectl ---------------------------------------------------------------------------------
    def get(self, *args: str) -> Any:
        proc = self.cluster.kubectl("get", *args, "-n", self.ns, "-o", "json", check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)

    def status(self) -> dict[str, Any]:
        return dict((self.get("aspec", self.name) or {}).get("status") or {})

    def pods(self, role: str | None = None) -> list[dict[str, Any]]:
        """The speculator's runtime pods that are Ready, not terminating, with an IP."""
        selector = pod_selector(self.name) + (f",adaspec.dev/role={role}" if role else "")
        out = []
        for pod in self.get("pods", "-l", selector)["items"]:
            st = pod.get("status") or {}
            ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])
            if ready and st.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
                out.append(pod)
        return out

    def serving(self, role: str) -> list[str]:
        """The revisions the ready pods of `role` serve (their label, set by the operator)."""
        return sorted(p["metadata"]["labels"]["adaspec.dev/revision"] for p in self.pods(role))

    # -- the control plane's API ---------------------------------------------------------------------
    def api(self, path: str, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"}
        r = httpx.get(self.cp.url + path, params=params, headers=headers, timeout=15)
        r.raise_for_status()
        return r.json()

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.post(self.cp.url + path, json=body, headers=headers, timeout=30)

    def speculator(self) -> dict[str, Any]:
        return dict(self.api(f"/api/v1/speculators/{self.name}"))

    def decisions(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/decisions", speculator=self.name, limit=500)["items"])

    def kinds(self) -> list[str]:
        return [d["kind"] for d in self.decisions() if d["kind"] != "canary_check"]

    # -- traffic ---------------------------------------------------------------------------------
    def send(self, prompts: Sequence[Any], max_tokens: int = 32, role: str | None = None) -> Counter[str]:
        """Greedy completions through the `openai` client, each to the next ready pod (of `role`, or any);
        return the requests per role.

        A pod can be deleted between listing it and connecting to it (a Deployment rolling, a canary
        removed at promotion): as a client behind a Service would, the request then goes to a pod still
        ready. A pod that refuses while it is still listed ready fails the test."""
        import openai

        roles: Counter[str] = Counter()
        for i, p in enumerate(prompts):
            for attempt in range(3):
                pods = self.pods(role)
                if not pods:
                    raise AssertionError(f"no ready runtime pod of {self.name} (role {role})")
                pod = pods[(i + attempt) % len(pods)]
                try:
                    self._complete(pod, p, max_tokens)
                    break
                except openai.APIConnectionError:
                    uid = pod["metadata"]["uid"]
                    if attempt == 2 or any(q["metadata"]["uid"] == uid for q in self.pods(role)):
                        raise
            roles[pod["metadata"]["labels"]["adaspec.dev/role"]] += 1
        return roles

    @staticmethod
    def _complete(pod: dict[str, Any], prompt: Any, max_tokens: int) -> None:
        import openai

        client = openai.OpenAI(
            base_url=f"http://{pod['status']['podIP']}:8000/v1", api_key="unused", max_retries=2, timeout=60
        )
        out = client.completions.create(
            model=client.models.list().data[0].id,
            prompt=list(prompt.token_ids),
            max_tokens=max_tokens,
            temperature=0,
        )
        assert out.usage is not None and out.usage.completion_tokens > 0
