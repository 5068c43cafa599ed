"""Where the pretrained model comes from: the cache location and a clear error for a missing package."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.pretrained import GgufSource, PretrainedError, cache_root, locate_gguf


def test_cache_root_honours_the_environment(tmp_path: Path) -> None:
    assert cache_root({"ADASPEC_CACHE": str(tmp_path)}) == tmp_path
    assert cache_root({}) == Path.home() / ".cache" / "adaspec"


def test_missing_package_is_named() -> None:
    source = GgufSource("adaspec_no_such_pkg", "adaspec-no-such-pkg", "m.gguf", "x/y")
    with pytest.raises(PretrainedError, match="'adaspec-no-such-pkg' is not installed"):
        locate_gguf(source)


def test_package_without_the_file_is_named() -> None:
    source = GgufSource("adaspec", "adaspec", "missing.gguf", "x/y")  # a namespace package, no GGUF
    with pytest.raises(PretrainedError, match="no 'missing.gguf'"):
        locate_gguf(source)
