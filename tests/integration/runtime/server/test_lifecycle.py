"""`adaspec serve` start and stop: bad command lines exit 2 with one line; SIGTERM lets streams finish."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .serving import adaspec, free_port, make_revision, start_serve

GRACE = 60


@dataclass(frozen=True)
class Exit:
    code: int
    stderr: str


def _bad_command_lines(fixture_dir: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Case name -> (serve arguments, what the one error line must contain)."""
    target, draft = fixture_dir / "target", fixture_dir / "draft"
    unknown_key = tmp / "unknown.yaml"
    unknown_key.write_text("controller:\n  maxLookahead: 4\n  lookahed: 2\n")
    capture = tmp / "capture.yaml"
    capture.write_text("capture:\n  enabled: true\n  sampleRate: 1.5\n")
    corrupt = make_revision(fixture_dir, tmp / "corrupt-r1", "r1")
    manifest = json.loads((corrupt / "manifest.json").read_text())
    manifest["files"]["model.safetensors"] = "0" * 64
    (corrupt / "manifest.json").write_text(json.dumps(manifest))
    adaptive_revision = make_revision(fixture_dir, tmp / "r2", "r2")  # a revision, not a feature draft
    ok = [f"--target-model={target}", f"--static-draft={draft}"]
    return {
        "unknown-scheme": (
            ["--target-model=s3://bucket/x", f"--static-draft={draft}"],
            "--target-model: scheme 's3' in 's3://bucket/x' is not supported "
            "(supported: a local path, file://, storage://)",
        ),
        "missing-dir": (
            [f"--target-model={tmp / 'no-model'}", f"--static-draft={draft}"],
            f"--target-model: directory {str(tmp / 'no-model')!r} does not exist",
        ),
        "unknown-setting": ([*ok, f"--controller-config={unknown_key}"], "controller.lookahed"),
        "capture": ([*ok, f"--controller-config={capture}"], "capture.sampleRate: "),
        "engine": ([*ok, "--engine=vllm"], "--engine 'vllm' is not available"),
        "revision-without-artifact": (
            [*ok, "--draft-revision=r1"],
            "--draft-revision 'r1' needs --draft-artifact",
        ),
        "static-without-draft": (
            [f"--target-model={target}", "--strategy=static"],
            "--strategy static needs --static-draft",
        ),
        "corrupt-revision": (
            [*ok, "--draft-revision=r1", f"--draft-artifact={corrupt}"],
            "cannot serve: ",
        ),
        "feature-draft-without-feature": (
            [*ok, f"--feature-draft={corrupt}"],
            "--feature-draft needs a strategy with the feature draft, not 'hybrid'",
        ),
        "not-a-feature-draft": (
            [*ok, "--strategy=hybrid-feature", f"--feature-draft={adaptive_revision}"],
            "cannot serve: ",
        ),
    }


@pytest.fixture(scope="module")
def bad_starts(fixture_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Exit, str]]:
    """Run every bad command line at once (each pays the imports); case -> (exit, expected text)."""
    tmp = tmp_path_factory.mktemp("bad-starts")
    token = tmp / "tokens"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    cases = _bad_command_lines(fixture_dir, tmp)
    procs = {}
    for name, (args, _) in cases.items():
        cmd = [*adaspec(), "serve", f"--port={free_port()}", f"--metrics-port={free_port()}"]
        procs[name] = subprocess.Popen(
            [*cmd, f"--admin-token-file={token}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    out = {}
    deadline = time.monotonic() + 300  # a loaded 2-core machine: 8 processes importing torch
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        out[name] = (Exit(proc.returncode, err), cases[name][1])
    return out


CHEAP = [
    "unknown-scheme",
    "missing-dir",
    "unknown-setting",
    "capture",
    "engine",
    "revision-without-artifact",
    "static-without-draft",
    "feature-draft-without-feature",
]


@pytest.mark.parametrize("case", CHEAP)
def test_bad_command_line_exits_2_with_one_line_before_listening(
    bad_starts: dict[str, tuple[Exit, str]], case: str
) -> None:
    result, expected = bad_starts[case]
    assert result.code == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("adaspec serve: error: "), lines
    assert expected in lines[0]
    assert "event=listening" not in result.stderr


def test_a_corrupt_revision_at_start_exits_2_after_loading_fails(
    bad_starts: dict[str, tuple[Exit, str]],
) -> None:
    result, expected = bad_starts["corrupt-revision"]
    assert result.code == 2, result.stderr[-2000:]
    assert "event=listening" in result.stderr  # this one is found only while loading
    assert "event=load_failed" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("adaspec serve: error: cannot serve: "), last
    assert "sha256" in last and "model.safetensors" in last, last
    assert "event=ready" not in result.stderr


def test_a_revision_that_is_not_a_feature_draft_exits_2_after_loading_fails(
    bad_starts: dict[str, tuple[Exit, str]],
) -> None:
    result, _ = bad_starts["not-a-feature-draft"]
    assert result.code == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("adaspec serve: error: cannot serve: "), last
    assert "is not a feature draft" in last and "train-draft --arch feature" in last, last


def test_sigterm_lets_the_running_stream_finish_then_exits_0(fixture_dir: Path, tmp_path: Path) -> None:
    s = start_serve(
        tmp_path,
        f"--target-model={fixture_dir / 'target'}",
        "--strategy=target-only",
        "--served-model-name=fixture",
        f"--shutdown-grace={GRACE}",
    )
    body = {
        "model": "fixture",
        "prompt": [5, 7, 9],
        "max_tokens": 200,
        "temperature": 0.8,
        "seed": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks: list[dict[str, object]] = []
    done = False
    try:
        with (
            httpx.Client(timeout=GRACE) as http,
            http.stream("POST", s.url + "/v1/completions", json=body) as r,
        ):
            assert r.status_code == 200
            lines = (ln[len("data: ") :] for ln in r.iter_lines() if ln.startswith("data: "))
            chunks.append(json.loads(next(lines)))  # the stream is running
            sent = time.monotonic()
            s.proc.send_signal(signal.SIGTERM)
            health: list[object] = []
            probe = threading.Thread(target=lambda: health.append(_health(s.url)))
            probe.start()
            for data in lines:
                if data == "[DONE]":
                    done = True
                    break
                chunks.append(json.loads(data))
            probe.join(30)
        code = s.proc.wait(timeout=GRACE + 15)
    finally:
        s.stop()
    assert done, chunks[-2:]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]  # type: ignore[index]
    assert finishes[-1] == "length" and finishes[:-1] == [None] * (len(finishes) - 1)
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 200  # type: ignore[index]
    assert health and health[0] in ("refused", ("draining", 503)), health
    assert code == 0, s.log_text()[-2000:]
    assert time.monotonic() - sent < GRACE + 15
    log = s.log_text()
    assert "event=draining signal=15" in log and "event=stopped" in log


def _health(url: str) -> object:
    """What /health answers right after SIGTERM: ('draining', 503), or 'refused' once the port is shut."""
    try:
        resp = httpx.get(url + "/health", timeout=10)
    except httpx.TransportError:
        return "refused"
    return resp.json().get("status"), resp.status_code
