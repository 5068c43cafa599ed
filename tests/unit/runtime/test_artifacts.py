"""Revisions load only with matching checksums and tokenizer, and never from pickles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from adaspec.runtime.artifacts import ArtifactError, load_revision, save_revision
from adaspec.runtime.models import small_llama


def _tiny() -> Any:
    return small_llama(64)


def _save(path: Path) -> None:
    save_revision(
        _tiny(),
        path,
        revision="r1",
        parent=None,
        target_model="t",
        tokenizer_sha256="abc",
        metrics={"acceptance": 0.5},
    )


def test_round_trip(tmp_path: Path) -> None:
    _save(tmp_path / "r1")
    model, manifest = load_revision(tmp_path / "r1", "abc")
    assert manifest.revision == "r1" and manifest.metrics == {"acceptance": 0.5}
    assert "model.safetensors" in manifest.files and "config.json" in manifest.files
    ref = _tiny()
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=x).logits, ref(input_ids=x).logits)


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    _save(tmp_path / "r1")
    weights = tmp_path / "r1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 of 'model.safetensors'"):
        load_revision(tmp_path / "r1", "abc")


def test_other_tokenizer_is_refused(tmp_path: Path) -> None:
    _save(tmp_path / "r1")
    with pytest.raises(ArtifactError, match="tokenizer"):
        load_revision(tmp_path / "r1", "def")


def test_pickles_are_refused(tmp_path: Path) -> None:
    _save(tmp_path / "r1")
    (tmp_path / "r1" / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ArtifactError, match="pickle"):
        load_revision(tmp_path / "r1", "abc")


def test_missing_manifest_and_bad_revision_id(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="manifest.json"):
        load_revision(tmp_path / "empty", "abc")
    with pytest.raises(ArtifactError, match="revision id"):
        save_revision(
            _tiny(), tmp_path / "x", revision="a/b", parent=None, target_model="t", tokenizer_sha256="a"
        )
