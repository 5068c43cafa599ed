"""corpus (fixtures, `bench micro`) and workloads (train-draft, `bench drift`) share one held-out split."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaspec.runtime.corpus import collect, iter_sources
from adaspec.runtime.draft_data import training_files
from adaspec.runtime.workloads import (
    LANG_EXTENSIONS,
    CorpusSpec,
    WorkloadError,
    cut_prompts,
    is_heldout,
    list_corpus,
)


def source_tree(root: Path, count: int) -> Path:
    """`count` Python files of about 3 kB (above corpus's 2 kB floor) in a few packages."""
    for i in range(count):
        path = root / f"pkg{i % 5}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(110)))
    return root


def test_training_files_and_held_out_files_never_overlap(tmp_path: Path) -> None:
    tree = source_tree(tmp_path / "tree", 80)
    link = tmp_path / "link"
    link.symlink_to(tree)  # a root given through a symlink names the same files
    train = {f.file_id for f in collect("python", link, heldout=False, max_bytes=10**9)}
    held = {f.file_id for f in collect("python", link, heldout=True, max_bytes=10**9)}
    corpus = list_corpus(CorpusSpec("python", link))
    bench_held = {f for f in corpus.files if is_heldout(f)}
    draft_train = set(training_files(corpus))
    assert train and held
    assert train | held == set(corpus.files)
    assert not train & bench_held
    assert not draft_train & held
    assert held == bench_held
    assert train == draft_train
    encode = lambda s: [ord(c) for c in s]  # noqa: E731
    prompts, _ = cut_prompts(corpus, encode, 5, prompt_tokens=(50, 80), heldout_only=True)
    assert {p.file_id for p in prompts} <= held


def test_corpus_and_workloads_share_one_table_of_languages(tmp_path: Path) -> None:
    body = "int f(void) { return 0; }\n" * 100  # about 2.6 kB, above corpus's 2 kB floor
    for name in ("a.cc", "b.hpp", "c.h", "d.py", "e_test.go"):
        (tmp_path / name).write_text(body)
    assert [f.rel for f in iter_sources("cpp", tmp_path)] == ["a.cc", "b.hpp", "c.h"]  # the table's endings
    assert {f.rel for f in iter_sources("cpp", tmp_path)} == {
        Path(f).name for f in list_corpus(CorpusSpec("cpp", tmp_path)).files
    }
    assert [f.rel for f in iter_sources("go", tmp_path)] == []  # _test.go is never a source
    assert "cpp" in LANG_EXTENSIONS
    with pytest.raises(WorkloadError, match="unknown corpus language 'cobol'"):
        list(iter_sources("cobol", tmp_path))
