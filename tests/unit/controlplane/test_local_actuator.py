"""The local actuator's adaptation runs: success, failure, timeout, idempotent start."""

from __future__ import annotations

import sys
from pathlib import Path

from adaspec.controlplane.actuators import LocalActuator
from adaspec.controlplane.config import LocalActuatorConfig

WRITE = (
    "import json, sys, pathlib; manifest = {'revision': 'r5', 'metrics': {'acc': 0.8}}; "
    "(pathlib.Path(sys.argv[1]) / 'manifest.json').write_text(json.dumps(manifest))"
)


def actuator(tmp_path: Path, code: str, timeout_s: float = 60) -> LocalActuator:
    cfg = LocalActuatorConfig(
        adapt_command=[sys.executable, "-c", code, "{out}"], work_dir=tmp_path, run_timeout_s=timeout_s
    )
    return LocalActuator(cfg)


def test_success_reads_the_manifest(tmp_path: Path) -> None:
    act = actuator(tmp_path, WRITE)
    act.start_adaptation("chat", "default", "chat-run1", "r4")
    act.start_adaptation("chat", "default", "chat-run1", "r4")  # retried: not started twice
    act.wait(30)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    assert (st.status, st.revision, st.metrics) == ("succeeded", "r5", {"acc": 0.8})
    assert st.sha256 is not None and len(st.sha256) == 64
    assert (tmp_path / "chat" / "chat-run1" / "manifest.json").exists()
    # a new instance (after a restart) finds the finished run from its directory
    assert actuator(tmp_path, WRITE).poll_adaptation("chat", "default", "chat-run1").revision == "r5"


def test_failure_reports_the_exit_code_and_log(tmp_path: Path) -> None:
    act = actuator(tmp_path, "import sys; print('no traffic captured'); sys.exit(3)")
    act.start_adaptation("chat", "default", "chat-run1", None)
    act.wait(30)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    assert st.status == "failed" and "exit code 3" in st.message and "no traffic captured" in st.message


def test_a_hanging_run_times_out(tmp_path: Path) -> None:
    act = actuator(tmp_path, "import time; time.sleep(60)", timeout_s=0.0)
    act.start_adaptation("chat", "default", "chat-run1", None)
    st = act.poll_adaptation("chat", "default", "chat-run1")
    act.wait(30)
    assert st.status == "failed" and "timed out" in st.message
