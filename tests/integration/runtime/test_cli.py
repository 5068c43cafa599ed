"""`adaspec generate` as a user runs it: JSON contract, and bad input rejected with a clear message."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROMPT = "def parse_args(argv):\n    parser = argparse.ArgumentParser()\n    parser."


def adaspec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "adaspec.cli.main", *args], capture_output=True, text=True, timeout=600
    )


def test_generate_json_contract_and_same_tokens_as_target_only(fixture_dir: Path) -> None:
    common = ["--target", str(fixture_dir / "target"), "--static-draft", str(fixture_dir / "draft")]
    runs = {}
    for strategy in ("target-only", "hybrid"):
        r = adaspec(
            "generate",
            *common,
            "--strategy",
            strategy,
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "20",
            "--json",
        )
        assert r.returncode == 0, r.stderr
        runs[strategy] = json.loads(r.stdout)
    out = runs["hybrid"]
    assert set(out) >= {"text", "token_ids", "stats"}
    stats = out["stats"]
    for key in (
        "generated_tokens",
        "target_forward_passes",
        "mean_accepted_length",
        "acceptance_rate",
        "tokens_per_second",
        "per_speculator",
    ):
        assert key in stats
    assert set(stats["per_speculator"]) == {"static", "adaptive", "suffix"}
    for counters in stats["per_speculator"].values():
        assert {"drafts", "draft_tokens", "accepted_tokens"} <= set(counters)
    assert out["token_ids"] == runs["target-only"]["token_ids"]
    assert stats["generated_tokens"] == len(out["token_ids"]) == 20
    assert stats["target_forward_passes"] <= 20


def test_prompt_file_and_plain_output(fixture_dir: Path, tmp_path: Path) -> None:
    pf = tmp_path / "prompt.py"
    pf.write_text(PROMPT)
    r = adaspec(
        "generate",
        "--target",
        str(fixture_dir / "target"),
        "--strategy",
        "suffix",
        "--prompt-file",
        str(pf),
        "--max-new-tokens",
        "8",
    )
    assert r.returncode == 0, r.stderr
    assert "mean_accepted_length=" in r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-new-tokens", "0", "--prompt", "x"], "must be > 0"),
        (["--max-new-tokens", "many", "--prompt", "x"], "positive integer"),
        (["--prompt", ""], "prompt is empty"),
        (["--prompt-file", "/nonexistent/prompt.txt"], "cannot read --prompt-file"),
    ],
)
def test_bad_request_input(fixture_dir: Path, args: list[str], message: str) -> None:
    r = adaspec("generate", "--target", str(fixture_dir / "target"), "--strategy", "target-only", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert r.stdout == ""


def test_missing_model_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    r = adaspec("generate", "--target", str(missing), "--strategy", "target-only", "--prompt", "x")
    assert r.returncode == 2
    assert str(missing) in r.stderr and "does not exist" in r.stderr


def test_pickle_weights_are_refused(fixture_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "pickled"
    shutil.copytree(fixture_dir / "target", bad)
    for f in bad.glob("*.safetensors"):
        f.rename(f.with_name("pytorch_model.bin"))
    r = adaspec("generate", "--target", str(bad), "--strategy", "target-only", "--prompt", "x")
    assert r.returncode == 2
    assert "no *.safetensors" in r.stderr and "pytorch_model.bin" in r.stderr


def test_draft_with_another_tokenizer_is_refused(fixture_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-draft"
    shutil.copytree(fixture_dir / "draft", other)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(tok))
    r = adaspec(
        "generate",
        "--target",
        str(fixture_dir / "target"),
        "--static-draft",
        str(other),
        "--strategy",
        "static",
        "--prompt",
        "x",
    )
    assert r.returncode == 2
    assert str(other) in r.stderr and str(fixture_dir / "target") in r.stderr
    assert "tokenizer" in r.stderr
