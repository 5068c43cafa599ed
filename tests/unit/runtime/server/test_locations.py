"""Locations of models and revisions: local paths and file:// URIs; anything else is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.server.locations import LocationError, resolve, storage_uri


def test_plain_path(tmp_path: Path) -> None:
    assert resolve(str(tmp_path), "--target-model") == tmp_path


def test_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve("model", "--target-model").resolve() == tmp_path / "model"


def test_file_uri(tmp_path: Path) -> None:
    assert resolve(f"file://{tmp_path}", "--static-draft") == tmp_path


def test_file_uri_with_localhost(tmp_path: Path) -> None:
    assert resolve(f"file://localhost{tmp_path}", "--static-draft") == tmp_path


def test_file_uri_percent_escapes(tmp_path: Path) -> None:
    d = tmp_path / "with space"
    d.mkdir()
    assert resolve(f"file://{tmp_path}/with%20space", "artifact_uri") == d


def test_unknown_scheme_is_named_with_the_supported_ones() -> None:
    with pytest.raises(LocationError) as info:
        resolve("s3://bucket/x", "--target-model")
    msg = str(info.value)
    assert msg.startswith("--target-model: ")
    assert "'s3'" in msg and "s3://bucket/x" in msg
    assert "supported: a local path, file://" in msg


def test_file_uri_naming_another_host_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LocationError, match=r"names host 'example\.com'; only local"):
        resolve(f"file://example.com{tmp_path}", "artifact_uri")


@pytest.mark.parametrize("form", ["{}", "file://{}"])
def test_missing_directory(tmp_path: Path, form: str) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(LocationError) as info:
        resolve(form.format(missing), "--draft-artifact")
    assert str(info.value) == f"--draft-artifact: directory {str(missing)!r} does not exist"


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(LocationError, match="does not exist"):
        resolve(str(f), "--target-model")


def test_empty_location() -> None:
    with pytest.raises(LocationError, match="^--tokenizer: empty location$"):
        resolve("", "--tokenizer")


def test_location_error_is_a_value_error() -> None:
    assert issubclass(LocationError, ValueError)


def test_storage_uri_is_under_the_shared_storage_root(tmp_path: Path) -> None:
    """storage:///<path> names the same files wherever a pod mounts the claim ($ADASPEC_STORAGE_ROOT)."""
    (tmp_path / "revisions" / "chat" / "r3").mkdir(parents=True)
    env = {"ADASPEC_STORAGE_ROOT": str(tmp_path)}
    uri = storage_uri("revisions/chat/r3")
    assert uri == "storage:///revisions/chat/r3"
    assert resolve(uri, "--draft-artifact", env) == tmp_path / "revisions" / "chat" / "r3"
    with pytest.raises(LocationError, match="ADASPEC_STORAGE_ROOT is not set"):
        resolve(uri, "--draft-artifact", {})
    with pytest.raises(LocationError, match="leaves the shared storage"):
        resolve("storage:///revisions/../../etc", "--draft-artifact", env)
