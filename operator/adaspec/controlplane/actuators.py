"""Actuators carry decisions out; one interface, a local (one-machine) and a Kubernetes implementation."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, assert_never

import httpx

from adaspec.operator.models import dns_label

from .actions import AbortCanary, ActionModel, Promote, Rollback, StartAdaptation, StartCanary
from .config import LocalActuatorConfig, Role

log = logging.getLogger("adaspec.controlplane.actuator")
REVISION_DIR = "revision"  # where a local run's candidate is written, beside its adapt.log
GATED_EXIT = 3  # `adaspec adapt`: the offline gate refused the candidate (docs/CONTRACTS.md)
STATIC_REVISION = "static"  # the runtime's built-in draft: loads with no artifact (docs/CONTRACTS.md)


@dataclass(frozen=True)
class RunStatus:
    """Where an adaptation run stands; on success, the candidate it produced."""

    status: Literal["running", "succeeded", "failed", "unknown"]
    revision: str | None = None
    artifact_uri: str | None = None
    sha256: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str = ""


class PermanentActionError(RuntimeError):
    """The world refused an action for good (e.g. the runtime answered 4xx): it is recorded as failed with
    this message and not retried. Any other exception leaves the action pending, to be retried."""


class Actuator(Protocol):
    """What the control plane asks of the world. Every call is idempotent (actions may be retried).

    `sha256` is the hex SHA-256 of the revision's manifest.json where known (None, e.g., for `static`).
    """

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None: ...

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None: ...

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus: ...

    def start_canary(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        parent: str | None,
        sha256: str | None = None,
    ) -> None: ...

    def promote(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        previous: str | None,
        sha256: str | None = None,
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
        sha256: str | None = None,
    ) -> None: ...


def fill(template: str, values: dict[str, str]) -> str:
    """Return `template` with `{name}` placeholders of `values` replaced (other braces are left alone)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def execute(actuator: Actuator, action: ActionModel) -> None:
    """Carry out one recorded `action` (parsed from the store by `actions.parse_action`)."""
    match action:
        case StartAdaptation():
            actuator.start_adaptation(action.speculator, action.namespace, action.run_id, action.parent)
        case StartCanary():
            actuator.start_canary(
                action.speculator,
                action.namespace,
                action.revision,
                action.artifact_uri,
                action.parent,
                sha256=action.sha256,
            )
        case Promote():
            actuator.promote(
                action.speculator,
                action.namespace,
                action.revision,
                action.artifact_uri,
                action.previous,
                sha256=action.sha256,
            )
        case AbortCanary():
            actuator.abort_canary(action.speculator, action.namespace, action.revision, action.reason)
        case Rollback():
            actuator.rollback(
                action.speculator,
                action.namespace,
                action.revision,
                action.to_revision,
                action.artifact_uri,
                action.reason,
                sha256=action.sha256,
            )
        case _:
            assert_never(action)


class NullActuator:
    """Records nothing and changes nothing (dry run; candidates arrive through the API)."""

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None:
        return None

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None:
        log.info("event=dry_run action=start_adaptation speculator=%s run=%s", speculator, run_id)

    def poll_adaptation(self, speculator: str, namespace: str, run_id: str) -> RunStatus:
        return RunStatus(status="unknown")

    def start_canary(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        parent: str | None,
        sha256: str | None = None,
    ) -> None:
        log.info("event=dry_run action=start_canary speculator=%s revision=%s", speculator, revision)

    def promote(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        previous: str | None,
        sha256: str | None = None,
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
        sha256: str | None = None,
    ) -> None:
        log.info("event=dry_run action=rollback speculator=%s to=%s", speculator, to_revision)


class LocalActuator:
    """One machine: adaptation runs as a subprocess writing a revision directory; revisions are loaded by
    the runtime's admin API (docs/CONTRACTS.md "Runtime process"): a POST of `{revision, artifact_uri,
    sha256, role, action}` with `Authorization: Bearer <token>` to the load URL of the role's runtime.

    Aborting a canary loads `static` into the canary runtime, so a rejected revision stops drafting.
    A 4xx answer (other than 408 and 429) is permanent (`PermanentActionError`, with the runtime's error
    message); a connection error, a timeout or a 5xx is raised as is and the action is retried.
    """

    def __init__(self, config: LocalActuatorConfig) -> None:
        self._config = config
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        if config.load_token_file is not None and (config.load_url or config.load_urls):
            self._token = read_token(config.load_token_file)

    def report_status(self, speculator: str, namespace: str, figures: dict[str, Any]) -> None:
        return None  # one machine: the API shows the figures

    def wait(self, timeout_s: float) -> None:
        """Wait for the adaptation processes this instance started (tests and clean shutdown)."""
        for proc in self._procs.values():
            proc.wait(timeout=timeout_s)

    def _out(self, speculator: str, run_id: str) -> Path:
        return self._config.work_dir / speculator / run_id

    def _artifact(self, speculator: str, revision: str | None) -> str:
        """The directory of a revision this actuator's runs wrote (the static draft for `static`)."""
        if not revision or revision == "static":
            return self._config.static_draft
        for manifest in sorted((self._config.work_dir / speculator).glob(f"*/{REVISION_DIR}/manifest.json")):
            try:
                if json.loads(manifest.read_text()).get("revision") == revision:
                    return str(manifest.parent)
            except ValueError:
                continue
        return ""

    def adapt_argv(self, speculator: str, run_id: str, parent: str | None) -> list[str]:
        """The argv of one adaptation run: `local.adapt_command` with its placeholders filled."""
        values = {
            "speculator": speculator,
            "run_id": run_id,
            "revision": dns_label("r", run_id),
            "parent": parent or "static",
            "parent_artifact": self._artifact(speculator, parent),
            "target_model": self._config.target_model,
            "capture": self._config.capture,
            "out": str(self._out(speculator, run_id) / REVISION_DIR),
        }
        return [fill(a, values) for a in self._config.adapt_command]

    def start_adaptation(self, speculator: str, namespace: str, run_id: str, parent: str | None) -> None:
        out = self._out(speculator, run_id)
        marker = out / ".started"
        if marker.exists():
            return  # already started (an action retried after a restart)
        out.mkdir(parents=True, exist_ok=True)
        argv = self.adapt_argv(speculator, run_id, parent)
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
        manifest = out / REVISION_DIR / "manifest.json"
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
                artifact_uri=manifest.parent.resolve().as_uri(),
                sha256=hashlib.sha256(raw).hexdigest(),
                metrics=metrics,
            )
        if code is not None:
            tail = (
                (out / "adapt.log").read_text(errors="replace")[-500:] if (out / "adapt.log").exists() else ""
            )
            if code == GATED_EXIT:
                reasons = [ln.strip()[2:] for ln in tail.splitlines() if ln.strip().startswith("- ")]
                why = "; ".join(reasons) or tail.strip()
                return RunStatus(status="failed", message=f"no candidate: the offline gate refused it: {why}")
            return RunStatus(status="failed", message=f"exit code {code}: {tail}")
        marker = out / ".started"
        if not marker.exists():
            return RunStatus(status="unknown")
        if time.time() - float(marker.read_text() or 0) > self._config.run_timeout_s:
            return RunStatus(status="failed", message="timed out (process lost across a restart)")
        return RunStatus(status="running")

    def _load(
        self,
        action: str,
        role: Role,
        revision: str,
        artifact_uri: str | None,
        sha256: str | None,
    ) -> None:
        url = self._config.load_url_for(role)
        if url is None:
            log.info("event=load_skipped reason=no_load_url action=%s role=%s", action, role)
            return
        if self._token is None:  # settings changed after start without a token file
            raise PermanentActionError(f"local.load_token_file: not set, needed to {action} through {url}")
        if artifact_uri is None and revision != STATIC_REVISION:
            raise PermanentActionError(
                f"{action} of {revision}: no artifact_uri recorded for it "
                f"(only {STATIC_REVISION!r} loads without one)"
            )
        body = {
            "revision": revision,
            "artifact_uri": None if artifact_uri is None else as_file_uri(artifact_uri),
            "sha256": sha256,
            "role": role,
            "action": action,
        }
        headers = {"Authorization": f"Bearer {self._token}"}
        resp = httpx.post(url, json=body, headers=headers, timeout=self._config.load_timeout_s)
        if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
            why = f"({resp.status_code}): {_error_message(resp)}"
            raise PermanentActionError(f"runtime at {url} refused {action} of {revision} {why}")
        resp.raise_for_status()
        log.info("event=revision_loaded action=%s role=%s revision=%s url=%s", action, role, revision, url)

    def start_canary(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        parent: str | None,
        sha256: str | None = None,
    ) -> None:
        self._load("start_canary", "canary", revision, artifact_uri, sha256)

    def promote(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        artifact_uri: str | None,
        previous: str | None,
        sha256: str | None = None,
    ) -> None:
        self._load("promote", "stable", revision, artifact_uri, sha256)

    def abort_canary(self, speculator: str, namespace: str, revision: str, reason: str) -> None:
        self._load("abort_canary", "canary", STATIC_REVISION, None, None)

    def rollback(
        self,
        speculator: str,
        namespace: str,
        revision: str,
        to_revision: str,
        artifact_uri: str | None,
        reason: str,
        sha256: str | None = None,
    ) -> None:
        self._load("rollback", "stable", to_revision, artifact_uri, sha256)


def read_token(path: Path) -> str:
    """Return the first field of the first line of `path` that is neither blank nor a `#` comment.

    Raises ValueError naming `local.load_token_file` and the file (never a token).
    """
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"local.load_token_file: cannot read {path}: {exc.strerror or exc}") from None
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            return line.split()[0]
    raise ValueError(f"local.load_token_file: {path} holds no token (blank lines and # comments only)")


def as_file_uri(location: str) -> str:
    """Return `location` as a URI: a plain path becomes an absolute `file://` URI, a URI is kept."""
    if "://" in location:
        return location
    return Path(location).resolve().as_uri()


def _error_message(resp: httpx.Response) -> str:
    """Return the message of a runtime error body `{"error": {"message", ...}}`, else the body's start."""
    try:
        error = resp.json().get("error")
    except ValueError:
        error = None
    if isinstance(error, dict) and error.get("message"):
        param = f" (param {error['param']})" if error.get("param") else ""
        return f"{error['message']}{param}"[:500]
    return resp.text.strip()[:500] or resp.reason_phrase
