"""Actuators carry decisions out; one interface, a local (one-machine) and a Kubernetes implementation."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from .config import LocalActuatorConfig

log = logging.getLogger("adaspec.controlplane.actuator")


@dataclass(frozen=True)
class RunStatus:
    """Where an adaptation run stands; on success, the candidate it produced."""

    status: Literal["running", "succeeded", "failed", "unknown"]
    revision: str | None = None
    artifact_uri: str | None = None
    sha256: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


class Actuator(Protocol):
    """What the control plane asks of the world. Every call is idempotent (actions may be retried)."""

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None: ...

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None: ...

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus: ...

    def start_canary(
        self, speculator: str, namespace: str, revision: str, artifact_uri: str | None, parent: str | None
    ) -> None: ...

    def promote(
        self, speculator: str, namespace: str, revision: str, artifact_uri: str | None, previous: str | None
    ) -> None: ...

    def abort_canary(self, speculator: str, namespace: str, revision: str, reason: str) -> None: ...

    def rollback(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        to_revision: str,
        artifact_uri: str | None,
        reason: str,
    ) -> None: ...


def fill(template: str, values: dict[str, str]) -> str:
    """Return `template` with `{name}` placeholders of `values` replaced (other braces are left alone)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def execute(actuator: Actuator, kind: str, p: dict[str, Any]) -> None:
    """Carry out one recorded action (`kind` with its stored payload)."""
    name, ns = p["speculator"], p["namespace"]
    if kind == "start_adaptation":
        actuator.start_adaptation(name, ns, p["run_id"], p.get("parent"))
    elif kind == "start_canary":
        actuator.start_canary(name, ns, p["revision"], p.get("artifact_uri"), p.get("parent"))
    elif kind == "promote":
        actuator.promote(name, ns, p["revision"], p.get("artifact_uri"), p.get("previous"))
    elif kind == "abort_canary":
        actuator.abort_canary(name, ns, p["revision"], p.get("reason", ""))
    elif kind == "rollback":
        actuator.rollback(
            name, ns, p["revision"], p["to_revision"], p.get("artifact_uri"), p.get("reason", "")
        )
    else:
        raise ValueError(f"action kind: unknown {kind!r}")


class NullActuator:
    """Records nothing and changes nothing (dry run; candidates arrive through the API)."""

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None:
        return None

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None:
        log.info("event=dry_run action=start_adaptation speculator=%s run=%s", speculator, run_id)

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus:
        return RunStatus(status="unknown")

    def start_canary(
        self, speculator: str, namespace: str, revision: str, artifact_uri: str | None, parent: str | None
    ) -> None:
        log.info("event=dry_run action=start_canary speculator=%s revision=%s", speculator, revision)

    def promote(
        self, speculator: str, namespace: str, revision: str, artifact_uri: str | None, previous: str | None
    ) -> None:
        log.info("event=dry_run action=promote speculator=%s revision=%s", speculator, revision)

    def abort_canary(self, speculator: str, namespace: str, revision: str, reason: str) -> None:
        log.info("event=dry_run action=abort_canary speculator=%s revision=%s", speculator, revision)

    def rollback(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        to_revision: str,
        artifact_uri: str | None,
        reason: str,
    ) -> None:
        log.info("event=dry_run action=rollback speculator=%s to=%s", speculator, to_revision)


class LocalActuator:
    """One machine: adaptation runs as a subprocess writing a revision directory; the runtime loads
    revisions when told by a POST to `load_url` (JSON `{action, revision, role, artifact_uri}`)."""

    def __init__(self, config: LocalActuatorConfig) -> None:
        self._config = config
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None:
        return None  # one machine: the API shows the figures

    def wait(self, timeout_s: float) -> None:
        """Wait for the adaptation processes this instance started (tests and clean shutdown)."""
        for proc in self._procs.values():
            proc.wait(timeout=timeout_s)

    def _out(self, speculator: str, run_id: str) -> Path:
        return self._config.work_dir / speculator / run_id

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None:
        out = self._out(speculator, run_id)
        marker = out / ".started"
        if marker.exists():
            return  # already started (an action retried after a restart)
        out.mkdir(parents=True, exist_ok=True)
        values = {"speculator": speculator, "out": str(out), "run_id": run_id, "parent": parent or ""}
        argv = [fill(a, values) for a in self._config.adapt_command]
        with (out / "adapt.log").open("wb") as logf:
            self._procs[run_id] = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT)
        marker.write_text(str(time.time()))
        log.info("event=adaptation_started speculator=%s run=%s", speculator, run_id)

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus:
        out = self._out(speculator, run_id)
        proc = self._procs.get(run_id)
        code = proc.poll() if proc is not None else None
        if proc is not None and code is None:
            marker = out / ".started"
            if time.time() - float(marker.read_text() or 0) > self._config.run_timeout_s:
                proc.kill()
                return RunStatus(
                    status="failed", message=f"timed out after {self._config.run_timeout_s:.0f} s"
                )
            return RunStatus(status="running")
        manifest = out / "manifest.json"
        if manifest.exists() and (code in (None, 0)):
            raw = manifest.read_bytes()
            try:
                data = json.loads(raw)
                revision = str(data["revision"])
            except (ValueError, KeyError) as exc:
                return RunStatus(status="failed", message=f"manifest.json unreadable: {exc}")
            metrics = {k: float(v) for k, v in dict(data.get("metrics") or {}).items()}
            return RunStatus(
                status="succeeded",
                revision=revision,
                artifact_uri=str(out),
                sha256=hashlib.sha256(raw).hexdigest(),
                metrics=metrics,
            )
        if code is not None:
            tail = (
                (out / "adapt.log").read_text(errors="replace")[-500:] if (out / "adapt.log").exists() else ""
            )
            return RunStatus(status="failed", message=f"exit code {code}: {tail}")
        marker = out / ".started"
        if not marker.exists():
            return RunStatus(status="unknown")
        if time.time() - float(marker.read_text() or 0) > self._config.run_timeout_s:
            return RunStatus(status="failed", message="timed out (process lost across a restart)")
        return RunStatus(status="running")

    def _load(self, body: dict[str, Any]) -> None:
        if self._config.load_url is None:
            log.info("event=load_skipped reason=no_load_url action=%s", body["action"])
            return
        resp = httpx.post(self._config.load_url, json=body, timeout=30.0)
        resp.raise_for_status()

    def start_canary(
        self, speculator: str, namespace: str, revision: str, artifact_uri: str | None, parent: str | None
    ) -> None:
        self._load(
            {
                "action": "start_canary",
                "speculator": speculator,
                "revision": revision,
                "role": "canary",
                "artifact_uri": artifact_uri,
            }
        )

    def promote(
        self, speculator: str, namespace: str, revision: str, artifact_uri: str | None, previous: str | None
    ) -> None:
        self._load(
            {
                "action": "promote",
                "speculator": speculator,
                "revision": revision,
                "role": "stable",
                "artifact_uri": artifact_uri,
            }
        )

    def abort_canary(self, speculator: str, namespace: str, revision: str, reason: str) -> None:
        self._load(
            {
                "action": "abort_canary",
                "speculator": speculator,
                "revision": revision,
                "role": "canary",
                "artifact_uri": None,
            }
        )

    def rollback(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        to_revision: str,
        artifact_uri: str | None,
        reason: str,
    ) -> None:
        self._load(
            {
                "action": "rollback",
                "speculator": speculator,
                "revision": to_revision,
                "role": "stable",
                "artifact_uri": artifact_uri,
            }
        )
