"""Corpus discovery and prompt cutting: mid-file cuts, exclusion of training files, bad input."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from adaspec.runtime.workloads import (
    LANG_EXTENSIONS,
    Corpus,
    CorpusSpec,
    WorkloadError,
    cut_prompts,
    is_heldout,
    list_corpus,
)


def encode(text: str) -> Sequence[int]:
    """A stand-in tokenizer: one token per character (deterministic, invertible)."""
    return [ord(c) for c in text]


def decode(ids: Sequence[int]) -> str:
    return "".join(chr(i) for i in ids)


def write_sources(root: Path, count: int, lines: int = 120) -> list[Path]:
    paths = []
    for i in range(count):
        path = root / f"pkg{i % 3}" / f"mod{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(lines))
        path.write_text(body)
        paths.append(path)
    return paths


def test_parse_corpus_argument() -> None:
    spec = CorpusSpec.parse("Go=/usr/local/go/src")
    assert spec == CorpusSpec("go", Path("/usr/local/go/src"))
    assert spec.extensions == LANG_EXTENSIONS["go"]  # a known name takes the table's endings
    with pytest.raises(WorkloadError, match="LANG=PATH"):
        CorpusSpec.parse("/just/a/path")


def test_any_language_with_its_endings() -> None:
    spec = CorpusSpec.parse("Perl:.pl,pm, .pl=/src/perl")
    assert spec == CorpusSpec("perl", Path("/src/perl"), (".pl", ".pm"))  # dot added, duplicate dropped
    assert CorpusSpec.parse("python:.py,.pyi=/x").extensions == (".py", ".pyi")  # a known name, overridden
    assert CorpusSpec.parse("ts:.d.ts=C:/src=x").path == Path("C:/src=x")  # PATH may hold ':' and '='


def test_unknown_language_without_endings_says_how_to_give_them() -> None:
    with pytest.raises(WorkloadError) as info:
        CorpusSpec.parse("cobol=/src")
    message = str(info.value)
    assert "unknown corpus language 'cobol'" in message and "python, go" in message
    assert "--corpus cobol:.ext1,.ext2=PATH" in message and "'cobol=/src'" in message
    with pytest.raises(WorkloadError, match="unknown corpus language 'perl'"):
        CorpusSpec("perl", Path("/src"))  # built directly, too


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("perl:=/src", "LANG=PATH"),  # a colon with no endings
        ("perl:.pl,=/src", "bad file ending '.'"),
        ("perl:.p/l=/src", "bad file ending '.p/l'"),
        ("perl:." + "x" * 17 + "=/src", "bad file ending"),
        ("perl:" + ",".join(f".e{i}" for i in range(17)) + "=/src", "at most 16 file endings, got 17"),
        ("../x:.pl=/src", "corpus language '../x' must be"),
        ("p" * 33 + ":.pl=/src", "must be a lower-case letter"),
        ("9lang:.x=/src", "must be a lower-case letter"),
    ],
)
def test_bad_names_and_endings_are_refused(text: str, fault: str) -> None:
    with pytest.raises(WorkloadError, match=re.escape(fault)):
        CorpusSpec.parse(text)


def test_a_new_language_corpus_yields_prompts(tmp_path: Path) -> None:
    body = "".join(f"sub f{j} {{\n    my ($x) = @_;\n    return $x + {j};\n}}\n\n" for j in range(120))
    for i in range(4):
        (tmp_path / f"Mod{i}.pm" if i % 2 else tmp_path / f"script{i}.pl").write_text(body)
    (tmp_path / "notes.txt").write_text(body)
    corpus = list_corpus(CorpusSpec.parse(f"perl:.pl,.pm={tmp_path}"))
    assert len(corpus.files) == 4 and not any(f.endswith(".txt") for f in corpus.files)
    prompts, report = cut_prompts(corpus, encode, 3, prompt_tokens=(100, 150))
    assert len(prompts) == 3 and {p.lang for p in prompts} == {"perl"} and report.lang == "perl"
    with pytest.raises(WorkloadError, match=r"no source files \(\.rb\)"):
        list_corpus(CorpusSpec.parse(f"ruby:.rb={tmp_path}"))


def test_go_tests_are_never_sources(tmp_path: Path) -> None:
    (tmp_path / "a.go").write_text("package a\n")
    (tmp_path / "a_test.go").write_text("package a\n")
    assert [Path(f).name for f in list_corpus(CorpusSpec("go", tmp_path)).files] == ["a.go"]


def test_list_corpus_walks_sources_and_skips_caches(tmp_path: Path) -> None:
    write_sources(tmp_path, 4)
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("not code\n")
    corpus = list_corpus(CorpusSpec("python", tmp_path))
    assert len(corpus.files) == 4
    assert all(f.endswith(".py") and "__pycache__" not in f for f in corpus.files)


def test_corpus_without_sources_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("# nothing here\n")
    with pytest.raises(WorkloadError, match=f"{tmp_path}.*no source files"):
        list_corpus(CorpusSpec("go", tmp_path))
    with pytest.raises(WorkloadError, match="does not exist"):
        list_corpus(CorpusSpec("go", tmp_path / "missing"))
    plain = tmp_path / "plain.txt"
    plain.write_text("hello")
    with pytest.raises(WorkloadError, match="not a zip"):
        list_corpus(CorpusSpec("java", plain))


def test_prompts_end_mid_file_at_a_line_start(tmp_path: Path) -> None:
    write_sources(tmp_path, 6)
    corpus = list_corpus(CorpusSpec("python", tmp_path))
    prompts, report = cut_prompts(corpus, encode, 5, prompt_tokens=(200, 300), min_tail_chars=400, seed=1)
    assert len(prompts) == 5 and report.eligible_files == 6
    assert len({p.file_id for p in prompts}) == 5  # at most one prompt per file
    for p in prompts:
        text = corpus.read(p.file_id)
        assert 200 <= len(p.token_ids) <= 300
        assert text[p.char_offset - 1] == "\n"  # the cursor sits at a line start
        assert len(text) - p.char_offset >= 400  # real code follows: the cut is mid-file
        assert text[: p.char_offset].endswith(decode(p.token_ids))
    again, _ = cut_prompts(corpus, encode, 5, prompt_tokens=(200, 300), min_tail_chars=400, seed=1)
    assert again == prompts  # seeded: the same prompts every run


def test_excluded_and_training_files_are_never_prompted(tmp_path: Path) -> None:
    write_sources(tmp_path, 12)
    corpus = list_corpus(CorpusSpec("python", tmp_path))
    excluded = set(corpus.files[:6])
    prompts, report = cut_prompts(corpus, encode, 6, prompt_tokens=(100, 150), exclude=excluded)
    assert report.excluded_files == 6
    assert not excluded & {p.file_id for p in prompts}
    with pytest.raises(WorkloadError, match="yields only 6 prompts"):
        cut_prompts(corpus, encode, 7, prompt_tokens=(100, 150), exclude=excluded)


def test_heldout_split_is_deterministic_and_partial() -> None:
    ids = [f"/src/file{i}.py" for i in range(400)]
    held = [f for f in ids if is_heldout(f)]
    assert held == [f for f in ids if is_heldout(f)]
    assert 60 < len(held) < 180  # about 30 %


def test_undecodable_files_are_skipped_and_reported(tmp_path: Path) -> None:
    write_sources(tmp_path, 3)
    bad = tmp_path / "latin1.py"
    bad.write_bytes(("# caf\xe9\n" + "x = 1\n" * 400).encode("latin-1"))
    corpus = list_corpus(CorpusSpec("python", tmp_path))
    prompts, report = cut_prompts(corpus, encode, 3, prompt_tokens=(100, 150))
    assert str(bad) in report.skipped_undecodable
    assert str(bad) not in {p.file_id for p in prompts}


def test_zip_corpus_and_an_unreadable_member(tmp_path: Path) -> None:
    archive = tmp_path / "src.zip"
    body = "".join(f"class C{j} {{\n  int f() {{ return {j}; }}\n}}\n" for j in range(200))
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("java.base/java/util/A.java", body)
        zf.writestr("java.base/java/util/B.java", body.replace("C", "D"))
        zf.writestr("README", "no code")
    corpus = list_corpus(CorpusSpec("java", archive))
    members = [f.split("!", 1)[1] for f in corpus.files]
    assert members == ["java.base/java/util/A.java", "java.base/java/util/B.java"]
    prompts, _ = cut_prompts(corpus, encode, 2, prompt_tokens=(100, 150))
    assert {p.lang for p in prompts} == {"java"}
    # Corrupt the stored bytes of one member: reading it must fail with an error naming it.
    raw = bytearray(archive.read_bytes())
    offset = raw.find(b"class D0")
    raw[offset : offset + 8] = b"XXXXXXXX"
    archive.write_bytes(bytes(raw))
    broken = Corpus("java", archive, corpus.files)
    with pytest.raises(WorkloadError, match="B.java"):
        broken.read(corpus.files[1])


def test_fixture_prompts_of_a_language_without_a_source_tree_here_are_refused() -> None:
    from adaspec.runtime.microbench import cut_prompts

    with pytest.raises(ValueError, match=r"no cobol source tree on this machine \(found: .*python"):
        cut_prompts(object(), "cobol", 4)
