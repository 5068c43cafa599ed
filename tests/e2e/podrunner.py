"""A stand-in kubelet for end-to-end tests: runs adaspec's pods bound to its own Node as local processes.

Test tooling, not a product feature; docs/TESTING.md ("The pod runner") says what it emulates and what it
does not. It is one module although longer than the house's 400 lines: it has one reason to change (what
the tests need of a kubelet). Its pure parts (`expand`, `host_value`, `key_files`, `probe_port`,
`pod_phase`) come first and are tested without a cluster; `_Pod` runs one pod; `PodRunner` owns the Node,
its heartbeat and the watch.
"""

from __future__ import annotations

import atexit
import base64
import http.client
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

import yaml

log = logging.getLogger(__name__)

NODE_LABEL = "adaspec.dev/pod-runner"
NODE_SELECTOR = {NODE_LABEL: "true"}
# Only needed when the runner is started with taint=True (then nothing lands on it by accident).
TOLERATION = {"key": NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
POD_SELECTOR = "app.kubernetes.io/name=adaspec"
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
CAPACITY = {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "8"}
HEARTBEAT_S = 10.0
LEASE_DURATION_S = 40
WATCH_TIMEOUT_S = 5
PROBE_PERIOD_CAP_S = 1.0  # probes run at most this far apart (tests are fast; Kubernetes' default is 10 s)
GRACE_CAP_S = 30.0
STOP_GRACE_S = 3.0
BACKOFF_S, BACKOFF_MAX_S = 0.5, 5.0  # restart backoff (kubelet: 10 s doubling to 5 min)
MESSAGE_BYTES = 2048  # FallbackToLogsOnError keeps this much of the log's tail, as kubelet does
IP_OCTETS = (range(10, 201), range(1, 255))  # pod IPs 127.0.10.1 .. 127.0.200.254
TERMINAL = ("Succeeded", "Failed")


class PodError(Exception):
    """A pod the runner cannot run as specified; the pod is marked Failed with this message."""


class _NotYet(Exception):
    """Something the pod needs does not exist yet; kubelet retries, and so does the runner for a while."""


# --- pure helpers ------------------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """Return `text` with `$(VAR)` replaced from `env` as kubelet does.

    `$$` is a literal `$` (so `$$(VAR)` stays `$(VAR)`), an unknown or unterminated reference is left as
    written, and a `$` before any other character is kept with it.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] != "$" or i + 1 == n:
            out.append(text[i])
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(" and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(env.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def map_path(path: str, mounts: Sequence[tuple[str, str]]) -> str | None:
    """Return the host path of a container path under one of `mounts` (mountPath, host directory), the
    longest mountPath winning; None when no mount holds it."""
    best: tuple[str, str] | None = None
    for mount, host in mounts:
        mount = mount.rstrip("/")
        if (path == mount or path.startswith(mount + "/")) and (best is None or len(mount) > len(best[0])):
            best = (mount, host)
    if best is None:
        return None
    return best[1] + path[len(best[0]) :]


def host_value(value: str, mounts: Sequence[tuple[str, str]], pod_ip: str) -> str:
    """Return an argument or environment value as the local process must see it.

    `0.0.0.0` (alone or after `=`) becomes the pod IP; a container path under a mount, alone, after the
    first `=` (`--flag=PATH`) or after `file://`, becomes the host path.
    """
    if value == "0.0.0.0":
        return pod_ip
    if value.endswith("=0.0.0.0"):
        return value[: -len("0.0.0.0")] + pod_ip
    starts = [0]
    if (eq := value.find("=")) != -1:
        starts.append(eq + 1)
    for start in starts:
        head, tail = value[:start], value[start:]
        scheme = "file://" if tail.startswith("file://") else ""
        mapped = map_path(tail[len(scheme) :], mounts)
        if mapped is not None:
            return head + scheme + mapped
    return value


def key_files(
    data: Mapping[str, bytes], items: Sequence[Mapping[str, Any]] | None, what: str, optional: bool
) -> list[tuple[str, bytes, int | None]]:
    """Return the files (relative path, content, mode or None) a configMap/secret volume source holds:
    every key, or only `items` (a missing key is an error unless `optional`)."""
    if not items:
        return [(key, value, None) for key, value in sorted(data.items())]
    files: list[tuple[str, bytes, int | None]] = []
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            raise PodError(f"{what} has no key {item['key']!r}")
        files.append((item["path"], data[item["key"]], item.get("mode")))
    return files


def probe_port(port: int | str | None, container: Mapping[str, Any]) -> int:
    """Return a probe's port number: a number, or the containerPort of that name."""
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise PodError(f"container {container['name']!r}: probe port {port!r} names no containerPort")


def pod_phase(exit_codes: Sequence[int | None]) -> str:
    """Return a started pod's phase from its containers' final exit codes (None: not finished for good)."""
    if not exit_codes or any(code is None for code in exit_codes):
        return "Running"
    return "Succeeded" if all(code == 0 for code in exit_codes) else "Failed"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bindable(ip: str, ports: Sequence[int]) -> bool:
    for port in (0, *ports):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


def _killpg(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # started with start_new_session: its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass


def _stop_processes(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every process group, wait up to `grace` seconds, SIGKILL what is left, reap them all."""
    for p in procs:
        _killpg(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        _killpg(p, signal.SIGKILL)  # also the group's stragglers, as a container's end kills them all
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log.warning("podrunner event=unkillable pid=%d", p.pid)


# --- API access ----------------------------------------------------------------------------------------


class _Api:
    """Plain-JSON calls through a kubernetes ApiClient configured from the runner's kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import config

        self.client: Any = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self.client.close()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        """Make one request; return the decoded JSON body or raise kubernetes' ApiException."""
        from kubernetes.client.exceptions import ApiException

        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if not hasattr(self.client, "param_serialize"):  # kubernetes < 35: the older generated client
            return self.client.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=30,
            )
        request = self.client.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.client.call_api(*request, _request_timeout=30)
        response.read()
        if response.status >= 400:
            raise ApiException(http_resp=response)
        return json.loads(response.data) if response.data else None

    def get(self, path: str) -> Any:
        """Return the object at `path`, or None when it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.call("GET", path)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, path: str, body: Any = None) -> None:
        """Delete the object at `path`; one already gone (or replaced: a failed precondition) is fine."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.call("DELETE", path, body)
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise


def _kubeconfig_cluster(kubeconfig: Path) -> tuple[str, bytes | None]:
    """Return the current context's API server URL and CA certificate (None when it names none)."""
    config = yaml.safe_load(kubeconfig.read_text())
    context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    if cluster.get("certificate-authority-data"):
        return cluster["server"], base64.b64decode(cluster["certificate-authority-data"])
    if cluster.get("certificate-authority"):
        return cluster["server"], (kubeconfig.parent / cluster["certificate-authority"]).read_bytes()
    return cluster["server"], None


# --- one pod -------------------------------------------------------------------------------------------


@dataclass
class _Container:
    """One container of a pod: how to run it, and where its process stands."""

    spec: dict[str, Any]
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    message_path: Path
    exec_probes: dict[str, list[str]]  # probe kind -> argv, for exec probes
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    run_offset: int = 0  # where the current run's output starts in the log
    ready: bool = False
    startup_passed: bool = True
    probe_at: float = 0.0
    successes: int = 0
    failures: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] | None = None
    restart_at: float | None = None
    backoff: float = BACKOFF_S
    final_code: int | None = None  # set when the container has ended for good

    @property
    def name(self) -> str:
        return str(self.spec["name"])


class _Pod:
    """Runs one pod on its own thread: volumes and environment, processes, probes, status, deletion."""

    def __init__(self, runner: PodRunner, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.runner, self.pod = runner, pod
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.dir = runner.workdir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.ip = ""
        self.volumes: dict[str, Path] = {}
        self.token_volumes: set[str] = set()
        self.containers: list[_Container] = []
        self.lock = threading.RLock()
        self.halted = False  # the runner is stopping: start nothing, report nothing
        self.gone = threading.Event()  # the pod object is gone
        self.delete_grace: float | None = None
        self.phase = "Pending"
        self.start_time = _now()
        self.since: dict[str, tuple[str, str]] = {}  # condition type -> (status, lastTransitionTime)
        self.sent: dict[str, Any] | None = None
        self.thread = threading.Thread(
            target=self._main, name=f"pod {self.namespace}/{self.name}", daemon=True
        )

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    def request_delete(self, grace: float) -> None:
        """The pod has a deletionTimestamp: stop its processes within `grace` seconds, then delete it."""
        self.delete_grace = grace if self.delete_grace is None else min(grace, self.delete_grace)

    def halt(self) -> list[subprocess.Popen[bytes]]:
        """Stop starting processes; return the running ones (the caller stops them)."""
        with self.lock:
            self.halted = True
            return [c.proc for c in self.containers if c.proc is not None]

    def _main(self) -> None:
        api = _Api(self.runner.kubeconfig)
        try:
            self._run(api)
        except Exception:
            log.exception("podrunner event=pod_crashed pod=%s/%s", self.namespace, self.name)
            _stop_processes(self.halt(), STOP_GRACE_S)
        finally:
            api.close()

    def _stopping(self) -> bool:
        return self.halted or self.gone.is_set() or self.delete_grace is not None

    def _run(self, api: _Api) -> None:
        try:
            self._setup(api)
        except Exception as exc:  # PodError, and anything else that keeps this pod from starting
            error = str(exc) if isinstance(exc, PodError) else f"{type(exc).__name__}: {exc}"
            log.warning("podrunner event=pod_failed pod=%s/%s error=%r", self.namespace, self.name, error)
            if not self._stopping():
                self._fail(api, error)
                return
            self.containers = []
        if not self._stopping():
            for c in self.containers:
                self._spawn(c)
            self.phase = "Running"
            log.info("podrunner event=pod_started pod=%s/%s ip=%s", self.namespace, self.name, self.ip)
        while True:
            if self.halted:
                return
            if self.gone.is_set():
                _stop_processes(self.halt(), STOP_GRACE_S)
                return
            if self.delete_grace is not None:
                self._terminate(api)
                return
            now = time.monotonic()
            for c in self.containers:
                self._tick(c, now)
            self.phase = pod_phase([c.final_code for c in self.containers])
            if self._send(api) and self.phase in TERMINAL:
                log.info(
                    "podrunner event=pod_ended pod=%s/%s phase=%s", self.namespace, self.name, self.phase
                )
                return
            time.sleep(0.1)

    # setup: IP, volumes, environment, argv

    def _setup(self, api: _Api) -> None:
        spec = self.pod["spec"]
        if spec.get("initContainers"):
            raise PodError("init containers are not supported by the pod runner; use containers only")
        ports = [
            int(p["containerPort"])
            for c in spec["containers"]
            for p in c.get("ports") or []
            if p.get("protocol", "TCP") == "TCP"
        ]
        self.ip = self.runner.allocate_ip(ports)
        deadline = time.monotonic() + self.runner.setup_timeout
        while True:
            try:
                self._prepare(api)
                return
            except _NotYet as exc:
                if time.monotonic() > deadline:
                    raise PodError(f"{exc} (waited {self.runner.setup_timeout:.0f}s)") from None
                if self._stopping():
                    return
                time.sleep(0.5)

    def _prepare(self, api: _Api) -> None:
        spec = self.pod["spec"]
        (self.dir / "home").mkdir(parents=True, exist_ok=True)
        self.token_volumes = set()
        self.volumes = {v["name"]: self._volume(api, v) for v in spec.get("volumes") or []}
        self.containers = [self._container(api, c) for c in spec["containers"]]

    def _data(self, api: _Api, plural: str, name: str, optional: bool) -> dict[str, bytes] | None:
        obj = api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        if obj is None:
            if optional:
                return None
            raise _NotYet(f"{plural[:-1]} {self.namespace}/{name} not found")
        data: dict[str, bytes] = {}
        if plural == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _field(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple: dict[str, str] = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": str(spec.get("nodeName", "")),
            "spec.serviceAccountName": str(spec.get("serviceAccountName", "default")),
            "status.podIP": self.ip,
            "status.podIPs": self.ip,
            "status.hostIP": "127.0.0.1",
            "status.hostIPs": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        if path in ("metadata.labels", "metadata.annotations"):
            values = meta.get(path.split(".")[1]) or {}
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(values.items()))
        if m := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
            return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
        raise PodError(f"fieldRef {path!r} is not supported by the pod runner")

    def _downward(self, items: Sequence[Mapping[str, Any]]) -> list[tuple[str, bytes, int | None]]:
        files: list[tuple[str, bytes, int | None]] = []
        for item in items:
            if "fieldRef" not in item:
                raise PodError(f"downwardAPI item {item['path']!r}: only fieldRef is supported")
            files.append(
                (item["path"], self._field(item["fieldRef"]["fieldPath"]).encode(), item.get("mode"))
            )
        return files

    def _token(self, api: _Api, source: Mapping[str, Any]) -> bytes:
        from kubernetes.client.exceptions import ApiException

        account = self.pod["spec"].get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds", 3600)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name, "uid": self.uid},
            },
        }
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token"
        try:
            return str(api.call("POST", path, body)["status"]["token"]).encode()
        except ApiException as exc:
            if exc.status == 404:
                raise _NotYet(f"serviceaccount {self.namespace}/{account} not found") from None
            raise

    def _volume(self, api: _Api, volume: Mapping[str, Any]) -> Path:
        name = str(volume["name"])
        target = self.dir / "volumes" / name
        files: list[tuple[str, bytes, int | None]] = []
        default_mode = 0o644
        if "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            return target
        if "hostPath" in volume:
            host, kind = Path(volume["hostPath"]["path"]), volume["hostPath"].get("type", "")
            if kind in ("", "DirectoryOrCreate"):
                host.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate":
                host.parent.mkdir(parents=True, exist_ok=True)
                host.touch()
            elif not host.exists():
                raise PodError(f"volume {name!r}: hostPath {host} does not exist")
            return host
        if "persistentVolumeClaim" in volume:
            return self._claim(api, name, volume["persistentVolumeClaim"]["claimName"])
        if "configMap" in volume or "secret" in volume:
            kind = "configMap" if "configMap" in volume else "secret"
            source = volume[kind]
            obj = source.get("name") if kind == "configMap" else source.get("secretName")
            optional = bool(source.get("optional", False))
            data = self._data(api, "configmaps" if kind == "configMap" else "secrets", obj, optional)
            files = key_files(data or {}, source.get("items"), f"{kind} {self.namespace}/{obj}", optional)
            default_mode = source.get("defaultMode", default_mode)
        elif "downwardAPI" in volume:
            files = self._downward(volume["downwardAPI"].get("items") or [])
            default_mode = volume["downwardAPI"].get("defaultMode", default_mode)
        elif "projected" in volume:
            files = self._projected(api, name, volume["projected"])
            default_mode = volume["projected"].get("defaultMode", default_mode)
        else:
            kinds = sorted(set(volume) - {"name"})
            raise PodError(
                f"volume {name!r}: {kinds} is not supported by the pod runner (emptyDir, configMap, secret, "
                "projected, downwardAPI, persistentVolumeClaim and hostPath are)"
            )
        target.mkdir(parents=True, exist_ok=True)
        for rel, content, mode in files:
            path = target / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise PodError(f"volume {name!r}: item path {rel!r} leaves the volume")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(mode if mode is not None else default_mode)
        return target

    def _projected(
        self, api: _Api, name: str, projected: Mapping[str, Any]
    ) -> list[tuple[str, bytes, int | None]]:
        files: list[tuple[str, bytes, int | None]] = []
        for source in projected.get("sources") or []:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                files.append((token["path"], self._token(api, token), None))
                if token["path"] == "token":
                    self.token_volumes.add(name)
            elif "configMap" in source or "secret" in source:
                kind = "configMap" if "configMap" in source else "secret"
                ref = source[kind]
                optional = bool(ref.get("optional", False))
                data = self._data(
                    api, "configmaps" if kind == "configMap" else "secrets", ref["name"], optional
                )
                what = f"{kind} {self.namespace}/{ref['name']}"
                files += key_files(data or {}, ref.get("items"), what, optional)
            elif "downwardAPI" in source:
                files += self._downward(source["downwardAPI"].get("items") or [])
            else:
                raise PodError(f"volume {name!r}: projected source {sorted(source)} is not supported")
        return files

    def _claim(self, api: _Api, volume: str, claim_name: str) -> Path:
        claim = api.get(f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim_name}")
        if claim is None:
            raise _NotYet(f"persistentvolumeclaim {self.namespace}/{claim_name} not found")
        pv_name = (claim.get("spec") or {}).get("volumeName")
        if (claim.get("status") or {}).get("phase") != "Bound" or not pv_name:
            raise _NotYet(f"persistentvolumeclaim {self.namespace}/{claim_name} is not bound")
        pv = api.get(f"/api/v1/persistentvolumes/{pv_name}")
        if pv is None:
            raise _NotYet(f"persistentvolume {pv_name} not found")
        pv_spec = pv.get("spec") or {}
        path = (pv_spec.get("hostPath") or pv_spec.get("local") or {}).get("path")
        if not path:
            raise PodError(
                f"volume {volume!r}: persistentvolume {pv_name} has neither hostPath nor local path"
            )
        Path(path).mkdir(parents=True, exist_ok=True)
        return Path(path)

    def _env(self, api: _Api, container: Mapping[str, Any], service: Mapping[str, str]) -> dict[str, str]:
        """Return the container's own environment as the container sees it (paths not yet rewritten)."""
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            kind = "configMapRef" if "configMapRef" in source else "secretRef"
            if kind not in source:
                raise PodError(f"container {container['name']!r}: envFrom {sorted(source)} is not supported")
            ref = source[kind]
            plural = "configmaps" if kind == "configMapRef" else "secrets"
            data = self._data(api, plural, ref["name"], bool(ref.get("optional", False))) or {}
            env.update({source.get("prefix", "") + k: v.decode(errors="replace") for k, v in data.items()})
        for var in container.get("env") or []:
            value_from = var.get("valueFrom")
            if value_from is None:
                env[var["name"]] = expand(var.get("value", ""), {**service, **env})
            elif (value := self._value_from(api, container, value_from)) is not None:
                env[var["name"]] = value
        return env

    def _value_from(
        self, api: _Api, container: Mapping[str, Any], value_from: Mapping[str, Any]
    ) -> str | None:
        if "fieldRef" in value_from:
            return self._field(value_from["fieldRef"]["fieldPath"])
        for kind, plural in (("configMapKeyRef", "configmaps"), ("secretKeyRef", "secrets")):
            if kind in value_from:
                ref = value_from[kind]
                optional = bool(ref.get("optional", False))
                data = self._data(api, plural, ref["name"], optional)
                if data is None or (ref["key"] not in data and optional):
                    return None
                if ref["key"] not in data:
                    raise _NotYet(f"{plural[:-1]} {self.namespace}/{ref['name']} has no key {ref['key']!r}")
                return data[ref["key"]].decode(errors="replace")
        raise PodError(f"container {container['name']!r}: valueFrom {sorted(value_from)} is not supported")

    def _program(self, argv: list[str], path: str) -> list[str]:
        if argv[0] == "adaspec":  # the local install stands in for every adaspec image
            return [sys.executable, "-m", "adaspec.cli.main", *argv[1:]]
        if "/" not in argv[0] and shutil.which(argv[0], path=path) is None:
            raise PodError(f"command {argv[0]!r} is not on the pod runner's PATH ({path})")
        return argv

    def _kubeconfig(self, volume: str) -> Path:
        """Write a kubeconfig with the token of a service-account volume (the in-cluster fallback)."""
        token = (self.volumes[volume] / "token").read_text()
        ca_file = self.volumes[volume] / "ca.crt"
        ca = ca_file.read_bytes() if ca_file.is_file() else self.runner.ca
        account = self.pod["spec"].get("serviceAccountName") or "default"
        cluster: dict[str, Any] = {"server": self.runner.server}
        if ca:
            cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "pod-runner", "cluster": cluster}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [
                {
                    "name": account,
                    "context": {"cluster": "pod-runner", "user": account, "namespace": self.namespace},
                }
            ],
            "current-context": account,
        }
        path = self.dir / f"kubeconfig-{volume}"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def _container(self, api: _Api, spec: dict[str, Any]) -> _Container:
        name = spec["name"]
        if not spec.get("command"):
            raise PodError(
                f"container {name!r} has no command: the pod runner cannot know image "
                f"{spec.get('image')!r}'s entrypoint; set command (and args)"
            )
        for kind in ("startupProbe", "readinessProbe"):
            probe = spec.get(kind)
            if probe is not None and not {"httpGet", "tcpSocket", "exec"} & set(probe):
                raise PodError(f"container {name!r}: {kind} {sorted(probe)} is not supported")
            if probe is not None and ("httpGet" in probe or "tcpSocket" in probe):
                probe_port((probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port"), spec)
        mounts: list[tuple[str, str]] = []
        kubeconfig: Path | None = None
        for m in spec.get("volumeMounts") or []:
            if m["name"] not in self.volumes:
                raise PodError(f"container {name!r}: volumeMount {m['name']!r} names no volume")
            host = self.volumes[m["name"]]
            if m.get("subPath"):
                host = host / m["subPath"]
                if not host.exists():
                    host.mkdir(parents=True)
            mounts.append((m["mountPath"], str(host)))
            if m["mountPath"].rstrip("/") == SA_MOUNT and m["name"] in self.token_volumes:
                kubeconfig = self._kubeconfig(m["name"])
        message_path = self.dir / "termination" / name
        message_path.parent.mkdir(parents=True, exist_ok=True)
        mounts.append((spec.get("terminationMessagePath") or "/dev/termination-log", str(message_path)))
        service = {
            "KUBERNETES_SERVICE_HOST": self.runner.host,
            "KUBERNETES_SERVICE_PORT": str(self.runner.port),
        }
        own = self._env(api, spec, service)
        view = {**service, **own}
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
        env = {k: os.environ[k] for k in self.runner.env_passthrough if k in os.environ}
        env.update(
            {"PATH": path, "HOME": str(self.dir / "home"), "HOSTNAME": self.name, "PYTHONUNBUFFERED": "1"}
        )
        env.update(service)
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        env.update({k: host_value(v, mounts, self.ip) for k, v in own.items()})
        argv = [
            host_value(expand(a, view), mounts, self.ip) for a in [*spec["command"], *spec.get("args", [])]
        ]
        exec_probes = {
            kind: self._program(
                [host_value(expand(a, view), mounts, self.ip) for a in probe["exec"]["command"]], path
            )
            for kind in ("startupProbe", "readinessProbe")
            if (probe := spec.get(kind)) is not None and "exec" in probe
        }
        cwd = self.dir / "cwd"
        if spec.get("workingDir"):
            cwd = Path(host_value(spec["workingDir"], mounts, self.ip))
            if not cwd.is_dir():
                raise PodError(
                    f"container {name!r}: workingDir {spec['workingDir']!r} is under no volume mount"
                )
        cwd.mkdir(parents=True, exist_ok=True)
        self.runner.logs_dir.mkdir(parents=True, exist_ok=True)
        return _Container(
            spec=spec,
            argv=self._program(argv, env["PATH"]),
            env=env,
            cwd=cwd,
            log_path=self.runner.log_path(self.namespace, self.name, name),
            message_path=message_path,
            exec_probes=exec_probes,
        )

    # processes and probes

    def _spawn(self, c: _Container) -> None:
        with self.lock:
            if self.halted:
                return
            c.run_offset = c.log_path.stat().st_size if c.log_path.exists() else 0
            c.message_path.write_bytes(b"")
            c.started_at, c.started_mono = _now(), time.monotonic()
            with c.log_path.open("ab") as out:
                try:
                    c.proc = subprocess.Popen(
                        c.argv,
                        env=c.env,
                        cwd=c.cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                except OSError as exc:
                    c.proc = None
                    self._exited(c, 128, f"starting {c.argv[0]!r} failed: {exc}")
                    return
        c.state = {"running": {"startedAt": c.started_at}}
        c.ready, c.successes, c.failures = False, 0, 0
        c.startup_passed = "startupProbe" not in c.spec
        first = c.spec.get("startupProbe") or c.spec.get("readinessProbe") or {}
        c.probe_at = c.started_mono + min(float(first.get("initialDelaySeconds", 0)), PROBE_PERIOD_CAP_S)

    def _tick(self, c: _Container, now: float) -> None:
        if c.final_code is not None:
            return
        if c.proc is None:
            if c.restart_at is not None and now >= c.restart_at:
                c.restart_at = None
                c.restarts += 1
                self._spawn(c)
            return
        code = c.proc.poll()
        if code is None:
            self._probe_tick(c, now)
            return
        _killpg(c.proc, signal.SIGKILL)  # what it left behind
        c.proc = None
        self._exited(c, 128 - code if code < 0 else code)

    def _exited(self, c: _Container, code: int, message: str | None = None) -> None:
        finished = _now()
        text = message if message is not None else self._message(c, code)
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": c.started_at or finished,
            "finishedAt": finished,
        }
        if text:
            terminated["message"] = text
        c.ready = False
        log.info(
            "podrunner event=container_exited pod=%s/%s container=%s code=%d",
            self.namespace,
            self.name,
            c.name,
            code,
        )
        policy = self.pod["spec"].get("restartPolicy", "Always")
        if policy == "Always" or (policy == "OnFailure" and code != 0):
            if time.monotonic() - c.started_mono > 10:
                c.backoff = BACKOFF_S
            c.last_state = {"terminated": terminated}
            c.state = {
                "waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {c.backoff:.1f}s restarting"}
            }
            c.restart_at = time.monotonic() + c.backoff
            c.backoff = min(c.backoff * 2, BACKOFF_MAX_S)
        else:
            c.state = {"terminated": terminated}
            c.final_code = code

    def _message(self, c: _Container, code: int) -> str:
        """Return the termination message: what the container wrote to terminationMessagePath, else with
        FallbackToLogsOnError and a failure, the tail of this run's output."""
        written = c.message_path.read_bytes()[:4096] if c.message_path.is_file() else b""
        if written.strip():
            return written.decode(errors="replace")
        if code == 0 or c.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            return ""
        with c.log_path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(c.run_offset, size - MESSAGE_BYTES))
            return f.read().decode(errors="replace")

    def _probe_tick(self, c: _Container, now: float) -> None:
        kind = "startupProbe" if not c.startup_passed else "readinessProbe"
        probe = c.spec.get(kind)
        if probe is None:
            c.ready = True
            return
        if now < c.probe_at:
            return
        c.probe_at = now + min(float(probe.get("periodSeconds", 10)), PROBE_PERIOD_CAP_S)
        ok = self._probe(c, kind, probe)
        if kind == "startupProbe":
            if ok:
                c.startup_passed, c.probe_at = True, now
                return
            period, threshold = float(probe.get("periodSeconds", 10)), int(probe.get("failureThreshold", 3))
            budget = float(probe.get("initialDelaySeconds", 0)) + period * threshold
            if now - c.started_mono > budget and c.proc is not None:  # the real budget, not the capped one
                log.info(
                    "podrunner event=startup_probe_failed pod=%s/%s container=%s",
                    self.namespace,
                    self.name,
                    c.name,
                )
                _killpg(c.proc, signal.SIGKILL)
            return
        if ok:
            c.successes, c.failures = c.successes + 1, 0
            if c.successes >= int(probe.get("successThreshold", 1)):
                c.ready = True
        else:
            c.successes, c.failures = 0, c.failures + 1
            if c.failures >= int(probe.get("failureThreshold", 3)):
                c.ready = False

    def _probe(self, c: _Container, kind: str, probe: Mapping[str, Any]) -> bool:
        timeout = min(float(probe.get("timeoutSeconds", 1)), 2.0)
        try:
            if "exec" in probe:
                run = subprocess.run(
                    c.exec_probes[kind],
                    env=c.env,
                    cwd=c.cwd,
                    capture_output=True,
                    timeout=timeout,
                    check=False,
                )
                return run.returncode == 0
            action = probe.get("httpGet") or probe["tcpSocket"]
            host, port = action.get("host") or self.ip, probe_port(action.get("port"), c.spec)
            if "tcpSocket" in probe:
                with socket.create_connection((host, port), timeout=timeout):
                    return True
            conn: http.client.HTTPConnection
            if str(action.get("scheme", "HTTP")).upper() == "HTTPS":
                conn = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=ssl._create_unverified_context()
                )
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            try:
                headers = {h["name"]: h["value"] for h in action.get("httpHeaders") or []}
                conn.request("GET", action.get("path") or "/", headers=headers)
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400
        except (OSError, http.client.HTTPException, subprocess.SubprocessError):
            return False

    # status

    def _condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
        status = "True" if ok else "False"
        prev = self.since.get(kind)
        since = prev[1] if prev is not None and prev[0] == status else _now()
        self.since[kind] = (status, since)
        cond: dict[str, Any] = {
            "type": kind,
            "status": status,
            "lastTransitionTime": since,
            "lastProbeTime": None,
        }
        if reason:
            cond["reason"] = reason
        if message:
            cond["message"] = message
        return cond

    def _status(self, phase: str, reason: str = "", message: str = "") -> dict[str, Any]:
        unready = [c.name for c in self.containers if not c.ready]
        ready = phase == "Running" and bool(self.containers) and not unready
        why = "PodCompleted" if phase in TERMINAL else "" if ready else "ContainersNotReady"
        note = "" if ready or phase in TERMINAL else f"containers with unready status: [{' '.join(unready)}]"
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", phase != "Failed" or bool(self.ip)),
                self._condition("PodScheduled", True),
                self._condition("Initialized", True),
                self._condition("ContainersReady", ready, why, note),
                self._condition("Ready", ready, why, note),
            ],
        }
        if self.ip:
            status.update({"podIP": self.ip, "podIPs": [{"ip": self.ip}]})
        if reason:
            status.update({"reason": reason, "message": message})
        statuses = []
        for c in self.containers:
            cs: dict[str, Any] = {
                "name": c.name,
                "image": c.spec.get("image", ""),
                "imageID": "",
                "ready": c.ready,
                "started": c.proc is not None and c.startup_passed,
                "restartCount": c.restarts,
                "state": {"running": None, "waiting": None, "terminated": None, **c.state},
            }
            if c.proc is not None:
                cs["containerID"] = f"podrunner://{c.proc.pid}"
            if c.last_state is not None:
                cs["lastState"] = {"running": None, "waiting": None, "terminated": None, **c.last_state}
            statuses.append(cs)
        if statuses:
            status["containerStatuses"] = statuses
        return status

    def _patch(self, api: _Api, status: dict[str, Any]) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            api.call(
                "PATCH",
                f"{self.path}/status",
                {"status": status},
                content_type="application/strategic-merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:
                self.gone.set()
                return True
            log.warning(
                "podrunner event=status_failed pod=%s/%s status=%s", self.namespace, self.name, exc.status
            )
            return False
        return True

    def _send(self, api: _Api) -> bool:
        """Write the status when it changed; return True when the API server has the latest."""
        status = self._status(self.phase)
        if status == self.sent:
            return True
        if self._patch(api, status):
            self.sent = status
            return True
        return False

    def _fail(self, api: _Api, message: str) -> None:
        """Mark the pod Failed: it could not be started as specified."""
        self.phase, self.containers = "Failed", []
        status = self._status("Failed", "PodRunnerError", message)
        now = _now()
        status["containerStatuses"] = [
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 128,
                        "reason": "StartError",
                        "message": message,
                        "startedAt": now,
                        "finishedAt": now,
                    }
                },
            }
            for c in self.pod["spec"]["containers"]
        ]
        for _ in range(20):
            if self._patch(api, status) or self._stopping():
                return
            time.sleep(0.5)

    def _terminate(self, api: _Api) -> None:
        """Deletion: SIGTERM, wait the grace period (capped), SIGKILL, then delete the pod for good."""
        grace = min(max(self.delete_grace or 0.0, 0.0), GRACE_CAP_S)
        log.info("podrunner event=pod_terminating pod=%s/%s grace=%.0f", self.namespace, self.name, grace)
        with self.lock:
            procs = [c.proc for c in self.containers if c.proc is not None]
        _stop_processes(procs, grace)
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": self.uid},
        }
        api.delete(self.path, body)


# --- the runner ----------------------------------------------------------------------------------------


class PodRunner:
    """A Node whose pods (those labelled `app.kubernetes.io/name=adaspec`) run as local processes.

    `kubeconfig` is an admin kubeconfig of the cluster; `workdir` holds a directory per pod (volumes, HOME,
    termination messages) and `logs/` (one file per container). Pods get there with the nodeSelector
    `NODE_SELECTOR` (and, with `taint=True`, the toleration `TOLERATION`). `env_passthrough` names
    variables of this process that every container also gets (by default none do).
    """

    def __init__(
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        node_name: str = "pod-runner",
        selector: str = POD_SELECTOR,
        taint: bool = False,
        env_passthrough: Sequence[str] = (),
        setup_timeout: float = 30.0,
    ) -> None:
        self.kubeconfig, self.workdir, self.node_name = Path(kubeconfig), Path(workdir), node_name
        self.selector, self.taint, self.env_passthrough = selector, taint, tuple(env_passthrough)
        self.setup_timeout = setup_timeout
        self.logs_dir = self.workdir / "logs"
        self.server, self.ca = _kubeconfig_cluster(self.kubeconfig)
        self.host, self.port = (
            urlparse(self.server).hostname or "127.0.0.1",
            urlparse(self.server).port or 443,
        )
        self._lock = threading.Lock()
        self._pods: dict[str, _Pod] = {}  # uid -> pod
        self._by_name: dict[tuple[str, str], _Pod] = {}  # (namespace, name) -> latest pod of that name
        self._stop = threading.Event()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        self._watch: Any = None
        self._ready_since = _now()
        total = len(IP_OCTETS[0]) * len(IP_OCTETS[1])
        self._ip_next, self._ip_left = random.randrange(total), total  # a random start: runners side by side

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # what tests use

    def log_path(self, namespace: str, pod: str, container: str) -> Path:
        """Return the file holding a container's stdout and stderr (every run of it, appended)."""
        return self.logs_dir / f"{namespace}_{pod}_{container}.log"

    def log(self, namespace: str, pod: str, container: str) -> str:
        """Return a container's output so far ('' before it ran); `kubectl logs` cannot reach it."""
        path = self.log_path(namespace, pod, container)
        return path.read_text(errors="replace") if path.is_file() else ""

    def logs(self, namespace: str) -> str:
        """Return the output of every container of a namespace, each under a header (for failures)."""
        parts = []
        for path in sorted(self.logs_dir.glob(f"{namespace}_*.log")):
            parts.append(f"----- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def volume_dir(self, namespace: str, pod: str, volume: str) -> Path:
        """Return the host directory of a pod's volume (the latest pod of that name)."""
        with self._lock:
            found = self._by_name.get((namespace, pod))
        if found is None or volume not in found.volumes:
            raise KeyError(f"no volume {volume!r} of a pod {namespace}/{pod} known to the pod runner")
        return found.volumes[volume]

    # lifecycle

    def start(self) -> PodRunner:
        """Register the Node, wait until it is schedulable, and start the heartbeat and the watch."""
        if not _bindable("127.0.10.1", ()):
            raise RuntimeError(
                "cannot bind 127.0.10.1: the pod runner needs all of 127.0.0.0/8 on lo (Linux)"
            )
        if Path(SA_MOUNT, "token").exists():
            log.warning(
                "podrunner event=host_token path=%s: in-cluster config in pods will read it", SA_MOUNT
            )
        atexit.register(self.stop)
        try:
            api = _Api(self.kubeconfig)
            try:
                self._register(api)
                self._beat(api)
                self._wait_schedulable(api)
            finally:
                api.close()
            for target, name in ((self._heartbeat_main, "heartbeat"), (self._watch_main, "watch")):
                thread = threading.Thread(target=target, name=f"pod-runner {name}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.stop()
            raise
        log.info("podrunner event=started node=%s server=%s", self.node_name, self.server)
        return self

    def stop(self) -> None:
        """Kill every process (SIGTERM, then SIGKILL), stop the threads and delete the Node. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            pods = list(self._pods.values())
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        procs = [p for pod in pods for p in pod.halt()]
        _stop_processes(procs, STOP_GRACE_S)
        for thread in [*self._threads, *(pod.thread for pod in pods)]:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=WATCH_TIMEOUT_S + 2)
        try:
            api = _Api(self.kubeconfig)
            try:
                api.delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}")
                api.delete(f"/api/v1/nodes/{self.node_name}")
            finally:
                api.close()
        except Exception as exc:  # the cluster may be gone already (atexit)
            log.warning("podrunner event=node_delete_failed node=%s error=%r", self.node_name, str(exc))
        atexit.unregister(self.stop)
        log.info("podrunner event=stopped node=%s pods=%d", self.node_name, len(pods))

    def allocate_ip(self, ports: Sequence[int]) -> str:
        """Return a loopback address no pod of this runner had, on which `ports` can be bound now."""
        per = len(IP_OCTETS[1])
        with self._lock:
            while self._ip_left > 0:
                index = self._ip_next % (len(IP_OCTETS[0]) * per)
                self._ip_next, self._ip_left = index + 1, self._ip_left - 1
                ip = f"127.0.{IP_OCTETS[0][index // per]}.{IP_OCTETS[1][index % per]}"
                if _bindable(ip, ports):
                    return ip
        raise PodError("the pod runner has no loopback address left")

    # the Node

    def _node(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.taint:
            spec["taints"] = [{"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    NODE_LABEL: "true",
                },
            },
            "spec": spec,
            "status": {
                "capacity": CAPACITY,
                "allocatable": CAPACITY,
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "conditions": [self._ready_condition()],
                "nodeInfo": {
                    "kubeletVersion": "pod-runner",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }

    def _ready_condition(self) -> dict[str, Any]:
        return {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "the pod runner is posting ready status",
            "lastHeartbeatTime": _now(),
            "lastTransitionTime": self._ready_since,
        }

    def _register(self, api: _Api) -> None:
        from kubernetes.client.exceptions import ApiException

        node = self._node()
        try:
            api.call("POST", "/api/v1/nodes", node)
        except ApiException as exc:
            if exc.status != 409:
                raise
            patch = {
                "metadata": {"labels": node["metadata"]["labels"]},
                "spec": {"taints": node["spec"].get("taints")},
            }
            api.call(
                "PATCH", f"/api/v1/nodes/{self.node_name}", patch, content_type="application/merge-patch+json"
            )
        status = {
            "status": {k: node["status"][k] for k in ("capacity", "allocatable", "addresses", "nodeInfo")}
        }
        api.call(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            status,
            content_type="application/merge-patch+json",
        )

    def _beat(self, api: _Api) -> None:
        """Renew the node's Lease and post its Ready condition (the node lifecycle controller reads both)."""
        from kubernetes.client.exceptions import ApiException

        renew = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lease_path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node_name}"
        spec = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": renew,
        }
        try:
            api.call("PATCH", lease_path, {"spec": spec}, content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status != 404:
                raise
            node = api.call("GET", f"/api/v1/nodes/{self.node_name}")
            owner = {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.node_name,
                "uid": node["metadata"]["uid"],
            }
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node_name,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [owner],
                },
                "spec": spec,
            }
            api.call("POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", lease)
        api.call(
            "PATCH",
            f"/api/v1/nodes/{self.node_name}/status",
            {"status": {"conditions": [self._ready_condition()]}},
            content_type="application/strategic-merge-patch+json",
        )

    def _wait_schedulable(self, api: _Api, timeout: float = 60.0) -> None:
        """Wait until the node lifecycle controller has lifted the not-ready taint a new Node gets."""
        deadline = time.monotonic() + timeout
        while True:
            node = api.call("GET", f"/api/v1/nodes/{self.node_name}")
            taints = {t["key"] for t in (node.get("spec") or {}).get("taints") or []}
            if not taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"node {self.node_name} still has taints {sorted(taints)} after {timeout:.0f}s"
                )
            time.sleep(0.3)

    def _heartbeat_main(self) -> None:
        api = _Api(self.kubeconfig)
        try:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    self._beat(api)
                except Exception as exc:
                    log.warning("podrunner event=heartbeat_failed node=%s error=%r", self.node_name, str(exc))
        finally:
            api.close()

    # the pods

    def _query(self) -> list[tuple[str, str]]:
        return [("fieldSelector", f"spec.nodeName={self.node_name}"), ("labelSelector", self.selector)]

    def _watch_main(self) -> None:
        from kubernetes import client, watch
        from kubernetes.client.exceptions import ApiException

        api = _Api(self.kubeconfig)
        try:
            while not self._stop.is_set():
                try:
                    listed = api.call("GET", "/api/v1/pods", query=self._query())
                    self._relisted(api, listed["items"])
                    version = listed["metadata"]["resourceVersion"]
                    while not self._stop.is_set():
                        self._watch = watch.Watch(return_type="object")  # type: ignore[no-untyped-call]
                        for event in self._watch.stream(
                            client.CoreV1Api(api.client).list_pod_for_all_namespaces,
                            field_selector=f"spec.nodeName={self.node_name}",
                            label_selector=self.selector,
                            resource_version=version,
                            timeout_seconds=WATCH_TIMEOUT_S,
                            allow_watch_bookmarks=True,
                        ):
                            obj = event["raw_object"]
                            version = (obj.get("metadata") or {}).get("resourceVersion") or version
                            if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                                self._event(api, event["type"], obj)
                except ApiException as exc:
                    if exc.status != 410:
                        log.warning("podrunner event=watch_failed status=%s; relisting", exc.status)
                        self._stop.wait(1.0)
                except Exception as exc:
                    if not self._stop.is_set():
                        log.warning("podrunner event=watch_failed error=%r; relisting", str(exc))
                        self._stop.wait(1.0)
        finally:
            api.close()

    def _relisted(self, api: _Api, items: Sequence[dict[str, Any]]) -> None:
        seen = {pod["metadata"]["uid"] for pod in items}
        with self._lock:
            lost = [pod for uid, pod in self._pods.items() if uid not in seen]
        for pod in lost:
            self._event(api, "DELETED", pod.pod)
        for obj in items:
            self._event(api, "MODIFIED", obj)

    def _event(self, api: _Api, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        with self._lock:
            if self._stopped:
                return
            pod = self._pods.get(meta["uid"])
            if kind == "DELETED":
                if pod is not None:
                    pod.gone.set()
                    del self._pods[meta["uid"]]
                return
            if pod is not None:
                if meta.get("deletionTimestamp"):
                    pod.request_delete(float(meta.get("deletionGracePeriodSeconds") or 0))
                return
            phase = (obj.get("status") or {}).get("phase")
            if meta.get("deletionTimestamp") or phase in TERMINAL:
                pod = None  # not started by this runner: nothing to run
            else:
                pod = _Pod(self, obj)
                self._pods[pod.uid] = pod
                self._by_name[(pod.namespace, pod.name)] = pod
                pod.thread.start()
        if pod is None and meta.get("deletionTimestamp") and phase not in TERMINAL:
            # a pod this runner never ran (one left by an earlier runner): finish its deletion
            body = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
            api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)
