"""End-to-end fixtures: the manifests installed on `kube_cluster`, and the operator running as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

CRDS = (
    "adaptivespeculators.adaspec.dev",
    "speculatorrevisions.adaspec.dev",
    "clusterkopfpeerings.kopf.dev",
    "servicemonitors.monitoring.coreos.com",
)


@pytest.fixture(scope="session")
def installed(kube_cluster: Any) -> Any:
    """Apply `manifests/` (namespace, CRDs, RBAC, operator) as the README says; return the cluster."""
    kube_cluster.kubectl("apply", "-k", str(ROOT / "manifests"))
    kube_cluster.kubectl("apply", "-f", str(Path(__file__).parent / "servicemonitor-crd.yaml"))
    kube_cluster.kubectl("wait", "--for=condition=Established", *(f"crd/{c}" for c in CRDS), "--timeout=60s")
    return kube_cluster


class OperatorProcess:
    """`adaspec operator` as a child process, restartable, with its output in a log file."""

    def __init__(self, env: dict[str, str], log: Path, extra: tuple[str, ...] = ()) -> None:
        self.env, self.log, self.extra = env, log, extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "adaspec.cli.main", "operator", "--peering=adaspec", *self.extra],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def operator(installed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """Run the operator against the cluster (with kopf peering) for the tests of one module."""
    installed.kubectl("apply", "-k", str(ROOT / "manifests" / "sample"), "--dry-run=server")  # CRDs served
    installed.kubectl("apply", "-f", str(ROOT / "manifests" / "sample" / "peering.yaml"))
    env = {
        **installed.env(),
        "PYTHONUNBUFFERED": "1",
        "KUBECONFIG": str(installed.service_account_kubeconfig("adaspec-operator")),
    }
    env.pop("PYTEST_CURRENT_TEST", None)
    op = OperatorProcess(env, tmp_path_factory.mktemp("operator") / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
        if os.environ.get("ADASPEC_E2E_SHOW_LOG"):
            print(op.tail(200))


@pytest.fixture(scope="module")
def pod_runner(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Run a PodRunner (tests/e2e/podrunner.py) on the cluster for the tests of one module: pods labelled
    app.kubernetes.io/name=adaspec with the nodeSelector adaspec.dev/pod-runner=true run as local
    processes; its Node is deleted at the end."""
    from .podrunner import PodRunner

    # PYTHONPATH: a test run from another checkout (a worktree) runs its own code in the pods too
    with PodRunner(
        kube_cluster.kubeconfig, tmp_path_factory.mktemp("pod-runner"), env_passthrough=("PYTHONPATH",)
    ) as runner:
        yield runner
