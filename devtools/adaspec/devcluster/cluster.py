"""Starts and stops a local control plane: etcd, kube-apiserver, controller-manager, scheduler and kwok."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adaspec.devcluster import build, pki

GPU_PER_NODE = 8
STATE_FILE = "cluster.json"
STOP_ORDER = ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")


@dataclass
class Running:
    """A started cluster: where its kubeconfig is, and the processes this Python process started."""

    state: Path
    kubeconfig: Path
    server: str
    kubectl: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)


def state_dir(name: str) -> Path:
    """Return the state directory of a named cluster under the cache directory."""
    return build.cache_root() / "clusters" / name


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_kubeconfig(path: Path, server: str, pki_dir: Path) -> Path:
    """Write a kubeconfig for the admin user (client certificate) and return its path."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "adaspec-dev",
                "cluster": {"server": server, "certificate-authority": str(pki_dir / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": "adaspec-admin",
                "user": {
                    "client-certificate": str(pki_dir / "admin.crt"),
                    "client-key": str(pki_dir / "admin.key"),
                },
            }
        ],
        "contexts": [{"name": "adaspec-dev", "context": {"cluster": "adaspec-dev", "user": "adaspec-admin"}}],
        "current-context": "adaspec-dev",
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def gpu_node(name: str) -> dict[str, object]:
    """Return a kwok-managed Node with `nvidia.com/gpu` capacity."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(GPU_PER_NODE)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
            },
        },
        "spec": {},
        "status": {"capacity": capacity, "allocatable": capacity, "phase": "Running"},
    }


def _spawn(name: str, argv: Sequence[str], logs: Path) -> subprocess.Popen[bytes]:
    with (logs / f"{name}.log").open("ab") as out:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _wait(
    what: str, check: object, timeout: float, procs: Sequence[subprocess.Popen[bytes]], logs: Path
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"{p.args!r} exited ({p.returncode}) while waiting for {what}; logs in {logs}"
                )
        try:
            if callable(check) and check():
                return
        except (OSError, ssl.SSLError, subprocess.SubprocessError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}; logs in {logs}")
        time.sleep(0.3)


def _pids_alive(state: Path) -> bool:
    path = state / STATE_FILE
    if not path.is_file():
        return False
    pids: dict[str, int] = json.loads(path.read_text())["pids"]
    return all(_is_ours(pid, state) for pid in pids.values())


def _is_ours(pid: int, state: Path) -> bool:
    """Return True when `pid` runs and its command line names this cluster's state directory."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return str(state) in cmdline


def _kubectl(kubectl: Path, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, proc.stdout, proc.stderr)
    return proc.stdout


def start(state: Path, *, gpu_nodes: int = 2, timeout: float = 120.0) -> Running:
    """Start a cluster whose files live under `state` (reusing one already running there); return it."""
    bins = build.build_all()
    kubeconfig = state / "kubeconfig"
    if _pids_alive(state):
        info = json.loads((state / STATE_FILE).read_text())
        return Running(state, kubeconfig, info["server"], bins["kubectl"])
    stop(state)
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    certs = pki.make_pki(state / "pki")
    etcd_port, peer_port, api_port, kcm_port, sched_port = (free_port() for _ in range(5))
    server = f"https://127.0.0.1:{api_port}"
    write_kubeconfig(kubeconfig, server, certs)
    procs: list[subprocess.Popen[bytes]] = []
    pids: dict[str, int] = {}

    def launch(name: str, argv: list[str]) -> None:
        p = _spawn(name, argv, logs)
        procs.append(p)
        pids[name] = p.pid
        (state / STATE_FILE).write_text(json.dumps({"server": server, "pids": pids}))

    try:
        launch(
            "etcd",
            [
                str(bins["etcd"]),
                "--name=default",
                f"--data-dir={state / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        etcd_health = f"http://127.0.0.1:{etcd_port}/health"
        _wait(
            "etcd",
            lambda: b'"true"' in urllib.request.urlopen(etcd_health, timeout=2).read(),
            30,
            procs,
            logs,
        )
        launch(
            "kube-apiserver",
            [
                str(bins["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={state / 'apiserver'}",
                f"--tls-cert-file={certs / 'apiserver.crt'}",
                f"--tls-private-key-file={certs / 'apiserver.key'}",
                f"--client-ca-file={certs / 'ca.crt'}",
                f"--service-account-key-file={certs / 'sa.pub'}",
                f"--service-account-signing-key-file={certs / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--authorization-mode=RBAC",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                "--profiling=false",
            ],
        )
        ctx = ssl.create_default_context(cafile=str(certs / "ca.crt"))
        ctx.load_cert_chain(str(certs / "admin.crt"), str(certs / "admin.key"))
        readyz = f"{server}/readyz"
        _wait(
            "kube-apiserver",
            lambda: urllib.request.urlopen(readyz, context=ctx, timeout=2).status == 200,
            timeout,
            procs,
            logs,
        )
        common = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        launch(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                *common,
                f"--secure-port={kcm_port}",
                f"--cert-dir={state / 'kcm'}",
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={certs / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--node-monitor-grace-period=60s",
            ],
        )
        launch(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                *common,
                f"--secure-port={sched_port}",
                f"--cert-dir={state / 'sched'}",
            ],
        )
        launch(
            "kwok",
            [
                str(bins["kwok"]),
                f"--kubeconfig={kubeconfig}",
                f"--config={build.kwok_stages_path(build.cache_root())}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                "--cidr=10.0.64.0/18",
                "--node-ip=10.0.1.1",
            ],
        )
        nodes = [gpu_node(f"kwok-gpu-{i}") for i in range(gpu_nodes)]
        _kubectl(
            bins["kubectl"],
            kubeconfig,
            "apply",
            "-f",
            "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes}),
        )
        kctl = bins["kubectl"]
        _wait(
            "GPU nodes Ready",
            lambda: (
                _kubectl(kctl, kubeconfig, "wait", "--for=condition=Ready", "node", "--all", "--timeout=5s")
                != ""
            ),
            timeout,
            procs,
            logs,
        )
        _wait(
            "default service account",
            lambda: (
                _kubectl(kctl, kubeconfig, "get", "serviceaccount", "default", "-n", "default", "-o", "name")
                != ""
            ),
            timeout,
            procs,
            logs,
        )
    except BaseException:
        stop(state, procs=procs, keep_logs=True)
        raise
    return Running(state, kubeconfig, server, bins["kubectl"], procs)


def stop(state: Path, *, procs: Sequence[subprocess.Popen[bytes]] = (), keep_logs: bool = False) -> None:
    """Stop every process of the cluster under `state` (TERM, then KILL), and remove its data."""
    path = state / STATE_FILE
    pids: dict[str, int] = json.loads(path.read_text())["pids"] if path.is_file() else {}
    order = [n for n in STOP_ORDER if n in pids]
    for name in order:
        pid = pids[name]
        if _is_ours(pid, state):
            _signal_group(pid, signal.SIGTERM)
            _reap(pid, procs, 10.0)
        if _is_ours(pid, state):
            _signal_group(pid, signal.SIGKILL)
            _reap(pid, procs, 5.0)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
    path.unlink(missing_ok=True)
    for sub in ("etcd", "apiserver", "kcm", "sched", "pki", "kubeconfig"):
        target = state / sub
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(state / "logs", ignore_errors=True)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # each process was started in its own session: its group id is its pid
    except ProcessLookupError:
        pass


def _reap(pid: int, procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    mine = [p for p in procs if p.pid == pid]
    while time.monotonic() < deadline:
        if mine:
            if mine[0].poll() is not None:
                return
        elif not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.1)
