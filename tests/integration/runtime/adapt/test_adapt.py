"""`adaspec adapt` as a process on captured Go traffic: the Python-only fixture draft gets a candidate that
the offline replay gate passes; a broken recipe is refused; bad input exits 2 naming it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adaspec.runtime.adapt.run import is_heldout
from adaspec.runtime.artifacts import load_revision
from adaspec.runtime.capture import CapturedRequest, CapturedStep, ShardWriter, read_records
from adaspec.runtime.engine import autoregressive_generate
from adaspec.runtime.models import CachedLM, load_causal_lm, tokenizer_fingerprint
from adaspec.runtime.proposers.vocab import VOCAB_FILE, draft_counts
from adaspec.runtime.workloads import Prompt

NEW = 32


@pytest.fixture(scope="module")
def go_capture(fixture_dir: Path, prompts: list[Prompt], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Captured traffic as `serve` writes it: Go prompts (the draft never saw Go), the target's outputs."""
    out = tmp_path_factory.mktemp("capture")
    target = CachedLM(load_causal_lm(fixture_dir / "target", "target"))
    fp = tokenizer_fingerprint(fixture_dir / "target")
    w = ShardWriter(out, max_bytes=1 << 24, retention_s=86400)
    for i, p in enumerate(p for p in prompts if p.lang == "go"):
        ids = list(p.token_ids)
        gen = autoregressive_generate(target, ids, NEW, eos_token_id=0)
        w.write(
            CapturedRequest(
                id=f"go-{i}",
                time=1000.0 + i,
                revision="static",
                role="stable",
                tag="go",
                prompt_ids=ids,
                output_ids=gen,
                steps=[CapturedStep(None, 0, 0, 1)] * len(gen),
                finish_reason="length",
                tokenizer_sha256=fp,
            )
        )
    w.close()
    return out


def adapt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adaspec.cli.main", "adapt", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.mark.parametrize("ranked", [False, True], ids=["full-vocabulary", "ranked"])
def test_a_candidate_distilled_on_go_passes_the_gate(
    ranked: bool, fixture_dir: Path, ranked_draft: Path, go_capture: Path, tmp_path: Path
) -> None:
    """Also from a parent with token counts (vocab.safetensors): the gate replays both over their reduced
    vocabularies, and the candidate carries the parent's counts with the Go traffic it learned counted in."""
    out = tmp_path / "r1"
    parent = ranked_draft if ranked else fixture_dir / "draft"
    r = adapt(
        f"--target-model={fixture_dir / 'target'}",
        f"--capture={go_capture.as_uri()}",
        f"--parent-artifact={parent}",
        "--parent=static",
        f"--out={out}",
        "--run-id=run1",
        "--revision=r1",
        "--steps=150",
        "--min-heldout=3",
        "--json",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    before, after = result["parent_replay"], result["candidate_replay"]
    assert after["acceptance_rate"] >= before["acceptance_rate"] + 0.02, result
    assert result["gate"] == {"passed": True, "reasons": []}
    model, manifest = load_revision(out, tokenizer_fingerprint(fixture_dir / "target"))
    assert manifest.revision == "r1" and manifest.parent == "static"
    assert manifest.metrics["offline_acceptance_rate"] == after["acceptance_rate"]
    assert manifest.training_window["run_id"] == "run1"
    assert "adapt: distil" in r.stderr  # the progress bar
    counts, parent_counts = draft_counts(out, 1024), draft_counts(parent, 1024)
    assert (VOCAB_FILE in manifest.files) == ranked == (counts is not None)
    if counts is not None and parent_counts is not None:
        trained = [rec for rec in read_records(go_capture) if not is_heldout(rec, 0.25)]  # adapt's split
        go_ids = {t for rec in trained for t in rec.prompt_ids + rec.output_ids}
        grown = [i for i in go_ids if counts[i] > parent_counts[i]]
        assert go_ids and len(grown) == len(go_ids), "every id of the trained-on Go traffic is counted in"
        print(f"ranked parent: held-out acceptance {before['acceptance_rate']} -> {after['acceptance_rate']}")


def test_a_broken_recipe_is_stopped_by_the_gate(fixture_dir: Path, go_capture: Path, tmp_path: Path) -> None:
    out = tmp_path / "bad"
    r = adapt(
        f"--target-model={fixture_dir / 'target'}",
        f"--capture={go_capture}",
        f"--parent-artifact={fixture_dir / 'draft'}",
        f"--out={out}",
        "--steps=40",
        "--lr=5",
        "--min-heldout=3",
    )
    assert r.returncode == 3, r.stdout + r.stderr[-2000:]
    assert "gate: refused, nothing written" in r.stdout and "held-out acceptance" in r.stdout
    assert not out.exists()


def test_bad_input_exits_2_naming_it(fixture_dir: Path, go_capture: Path, tmp_path: Path) -> None:
    common = [
        f"--target-model={fixture_dir / 'target'}",
        f"--parent-artifact={fixture_dir / 'draft'}",
        f"--out={tmp_path / 'x'}",
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    r = adapt(*common, f"--capture={empty}")
    assert r.returncode == 2 and "no captured traffic" in r.stderr
    r = adapt(*common, f"--capture={go_capture}", "--since=99999999999")
    assert r.returncode == 2 and "no captured traffic" in r.stderr
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    shard = sorted(go_capture.iterdir())[0]
    lines = shard.read_text().splitlines(keepends=True)
    (corrupt / shard.name).write_text(lines[0] + "{oops\n" + "".join(lines[1:]))
    r = adapt(*common, f"--capture={corrupt}")
    assert r.returncode == 2 and f"corrupt capture shard: {shard.name}:2" in r.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / shard.name).write_text(lines[0].replace(tokenizer_fingerprint(fixture_dir / "target"), "f" * 64))
    r = adapt(*common, f"--capture={other}")
    assert r.returncode == 2 and "another tokenizer" in r.stderr
    r = adapt(*common, "--capture=s3://bucket/capture")
    assert r.returncode == 2 and "scheme 's3'" in r.stderr
