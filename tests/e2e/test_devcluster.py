"""`adaspec dev cluster up|env|down` starts a working cluster and leaves no process behind."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from adaspec.devcluster import build, cluster


def adaspec(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "adaspec.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(
    not all(build.is_built(c, build.cache_root()) for c in build.COMPONENTS),
    reason="cluster binaries not built (run `adaspec dev cluster build`)",
)
def test_cli_up_env_down_leaves_no_process() -> None:
    name = f"pytest-{uuid.uuid4().hex[:8]}"
    state = cluster.state_dir(name)
    try:
        kubeconfig = adaspec("dev", "cluster", "up", "--name", name, "--gpu-nodes", "1").strip()
        assert kubeconfig == str(state / "kubeconfig")
        assert adaspec("dev", "cluster", "up", "--name", name).strip() == kubeconfig  # reuses the running one
        assert adaspec("dev", "cluster", "env", "--name", name).strip() == f"export KUBECONFIG={kubeconfig}"
        kubectl = str(build.binary_paths()["kubectl"])
        nodes = subprocess.run(
            [
                kubectl,
                f"--kubeconfig={kubeconfig}",
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.allocatable.nvidia\\.com/gpu}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        assert nodes == str(cluster.GPU_PER_NODE)
        assert len(processes_naming(str(state))) == 5
    finally:
        adaspec("dev", "cluster", "down", "--name", name)
    assert processes_naming(str(state)) == []
    assert not (state / "kubeconfig").exists()
