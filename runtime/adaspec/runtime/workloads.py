"""Code-completion workloads cut from source trees (or a JDK src.zip) already on this machine."""

from __future__ import annotations

import hashlib
import os
import random
import re
import sysconfig
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The one table of known corpus languages and the file-name endings of their sources (`--corpus LANG=PATH`);
# any other language is given with its endings (`--corpus LANG:.EXT,...=PATH`).
LANG_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "python": (".py",),
    "go": (".go",),
    "java": (".java",),
    "c": (".c", ".h"),
    "cpp": (".cc", ".cpp", ".hpp", ".h"),
    "rust": (".rs",),
    "javascript": (".js",),
}
TEST_SUFFIXES = ("_test.go",)  # sources that test another file: never a workload, never trained on
CORPUS_SYNTAX = "LANG=PATH or LANG:.EXT[,.EXT...]=PATH"
LANG_NAME = re.compile(r"[a-z][a-z0-9_+-]{0,31}")  # also a cache directory's name: no path characters
EXTENSION = re.compile(r"(\.[A-Za-z0-9_+-]{1,16}){1,3}")  # .pl, .PL, .d.ts
MAX_EXTENSIONS = 16
# Directories never walked: bytecode caches, installed third-party code, fixture data.
SKIP_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "testdata", ".git", "node_modules"})
JVM_ROOT = Path("/usr/lib/jvm")
HELDOUT_PERCENT = 30  # share of files (by path hash) that training never reads


class WorkloadError(ValueError):
    """A corpus cannot be used; the message names the path or file and why."""


def extensions_for(lang: str, given: Sequence[str] = ()) -> tuple[str, ...]:
    """Return the file-name endings of `lang`'s sources: `given` (a missing leading dot added), else the
    known table's. Raise WorkloadError naming a bad language name or ending, or a language that is not in
    the table and comes without endings (the message says how to give them)."""
    if not LANG_NAME.fullmatch(lang):
        raise WorkloadError(
            f"corpus language {lang!r} must be a lower-case letter then up to 31 of a-z 0-9 _ + -"
        )
    if not given:
        if lang not in LANG_EXTENSIONS:
            known = ", ".join(LANG_EXTENSIONS)
            raise WorkloadError(
                f"unknown corpus language {lang!r} (known: {known}); for another language give the "
                f"endings of its files, e.g. --corpus {lang}:.ext1,.ext2=PATH"
            )
        return LANG_EXTENSIONS[lang]
    if len(given) > MAX_EXTENSIONS:
        raise WorkloadError(f"{lang} corpus: at most {MAX_EXTENSIONS} file endings, got {len(given)}")
    exts = tuple(dict.fromkeys(e if e.startswith(".") else f".{e}" for e in given))
    bad = [e for e in exts if not EXTENSION.fullmatch(e)]
    if bad:
        raise WorkloadError(
            f"{lang} corpus: bad file ending {bad[0]!r}; an ending is a dot then 1-16 of A-Z a-z 0-9 _ + - "
            "(up to three parts, as .d.ts)"
        )
    return exts


def is_source(name: str, extensions: tuple[str, ...]) -> bool:
    """True when the file name ends in one of `extensions` and is not a test of another file (`_test.go`)."""
    return name.endswith(extensions) and not name.endswith(TEST_SUFFIXES)


@dataclass(frozen=True)
class CorpusSpec:
    """`LANG=PATH` or `LANG:.EXT,...=PATH` as given on the command line (PATH: a directory of sources, or a
    .zip of them). Built directly, `extensions` defaults to the known table's for `lang`."""

    lang: str
    path: Path
    extensions: tuple[str, ...] = ()  # file-name endings of the sources; checked and filled on construction

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", extensions_for(self.lang, self.extensions))

    @classmethod
    def parse(cls, text: str) -> CorpusSpec:
        """Parse `LANG=PATH` (a known language) or `LANG:.EXT1,.EXT2=PATH` (any language, its endings
        given); raise WorkloadError naming the bad argument."""
        head, sep, path = text.partition("=")
        name, colon, endings = head.partition(":")
        lang = name.strip().lower()
        if not sep or not lang or not path.strip() or (colon and not endings.strip()):
            raise WorkloadError(f"corpus must be {CORPUS_SYNTAX}, got {text!r}")
        given = tuple(e.strip() for e in endings.split(",")) if colon else ()
        try:
            return cls(lang, Path(path.strip()).expanduser(), given)
        except WorkloadError as exc:
            raise WorkloadError(f"{exc} (in {text!r})") from exc


@dataclass(frozen=True)
class Corpus:
    """The source files of one language found under a path. File ids are stable strings."""

    lang: str
    path: Path
    files: tuple[str, ...]  # ids: absolute paths, or "<zip>!<member>" for archives

    def read(self, file_id: str) -> str:
        """Return a file's text; raise WorkloadError naming the file when it cannot be read or decoded."""
        try:
            if "!" in file_id and zipfile.is_zipfile(file_id.split("!", 1)[0]):
                archive, member = file_id.split("!", 1)
                with zipfile.ZipFile(archive) as zf:
                    data = zf.read(member)
            else:
                data = Path(file_id).read_bytes()
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise WorkloadError(f"cannot read source file {file_id!r}: {exc}") from exc
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkloadError(f"source file {file_id!r} is not UTF-8: {exc}") from exc


@dataclass(frozen=True)
class Prompt:
    """One completion request: the last `len(token_ids)` tokens before a line start inside a file."""

    lang: str
    file_id: str
    char_offset: int  # where the prompt ends in the file's text
    token_ids: tuple[int, ...]  # [prompt_len]


@dataclass
class CutReport:
    """What cutting prompts from a corpus looked at (written to results.json's setup)."""

    lang: str
    path: str
    files: int
    eligible_files: int
    excluded_files: int
    skipped_undecodable: list[str] = field(default_factory=list)


def is_heldout(file_id: str, percent: int = HELDOUT_PERCENT) -> bool:
    """True for files in the deterministic held-out split (by sha256 of the id); training skips them."""
    bucket = int(hashlib.sha256(file_id.encode()).hexdigest()[:8], 16) % 100
    return bucket < percent


def default_corpora() -> list[CorpusSpec]:
    """Return the default phases found here, in order: Python stdlib, Go's sources, the JDK's src.zip."""
    specs = [CorpusSpec("python", Path(sysconfig.get_paths()["stdlib"]))]
    goroot = os.environ.get("GOROOT", "/usr/local/go")
    for cand in (Path(goroot) / "src", Path("/usr/local/go/src"), Path("/usr/lib/go/src")):
        if cand.is_dir():
            specs.append(CorpusSpec("go", cand))
            break
    # Distribution JDKs often ship src.zip as a symlink into an uninstalled -source package.
    zips = sorted(p for p in JVM_ROOT.glob("*/lib/src.zip") if p.is_file())
    if zips:
        specs.append(CorpusSpec("java", zips[0]))
    return specs


def list_corpus(spec: CorpusSpec) -> Corpus:
    """Find the source files of `spec.lang` (by `spec.extensions`) under `spec.path`; raise WorkloadError
    when there are none."""
    path = spec.path
    files: list[str] = []
    if path.is_dir():
        root = path.resolve()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            files.extend(str(Path(dirpath) / f) for f in sorted(filenames) if is_source(f, spec.extensions))
    elif path.is_file():
        if not zipfile.is_zipfile(path):
            raise WorkloadError(f"{spec.lang} corpus {str(path)!r} is a file but not a zip of sources")
        try:
            with zipfile.ZipFile(path) as zf:
                names = sorted(n for n in zf.namelist() if is_source(n, spec.extensions))
        except (OSError, zipfile.BadZipFile) as exc:
            raise WorkloadError(f"cannot read {spec.lang} corpus archive {str(path)!r}: {exc}") from exc
        root = path.resolve()
        files = [f"{root}!{n}" for n in names]
    else:
        raise WorkloadError(f"{spec.lang} corpus path {str(path)!r} does not exist")
    if not files:
        exts = ", ".join(spec.extensions)
        raise WorkloadError(f"{spec.lang} corpus {str(path)!r} contains no source files ({exts})")
    return Corpus(spec.lang, root, tuple(files))


def _line_starts(text: str, lo: int, hi: int) -> list[int]:
    """Offsets in [lo, hi) that start a non-blank line (a natural place for a completion cursor)."""
    starts = []
    pos = text.find("\n", lo)
    while 0 <= pos < hi - 1:
        if text[pos + 1] not in "\r\n":
            starts.append(pos + 1)
        pos = text.find("\n", pos + 1)
    return starts


def cut_prompts(
    corpus: Corpus,
    encode: Callable[[str], Sequence[int]],
    count: int,
    *,
    prompt_tokens: tuple[int, int] = (256, 384),
    min_tail_chars: int = 600,
    seed: int = 0,
    exclude: Iterable[str] = (),
    heldout_only: bool = False,
) -> tuple[list[Prompt], CutReport]:
    """Return `count` prompts (at most one per file) and a report of what was looked at.

    Files are visited in a seeded random order. A prompt ends at the start of a line chosen in the
    middle of the file (at least `min_tail_chars` of the file follow it, so the target continues
    real code rather than an end of file) and holds the last N tokens before it, N drawn from
    `prompt_tokens`. Files in `exclude` (for example a draft's training files) are never used;
    `heldout_only` further restricts to the held-out split. Undecodable files are skipped and
    listed in the report; any other read error is raised. Raises WorkloadError when the corpus
    cannot supply `count` prompts.
    """
    lo_tokens, hi_tokens = prompt_tokens
    if count <= 0 or lo_tokens <= 0 or hi_tokens < lo_tokens:
        raise WorkloadError(f"need count > 0 and 0 < min <= max prompt tokens, got {count=} {prompt_tokens=}")
    excluded = set(exclude)
    eligible = [f for f in corpus.files if f not in excluded and (not heldout_only or is_heldout(f))]
    report = CutReport(corpus.lang, str(corpus.path), len(corpus.files), len(eligible), 0)
    report.excluded_files = len(corpus.files) - len(eligible)
    rng = random.Random(f"{seed}:{corpus.lang}")
    order = eligible[:]
    rng.shuffle(order)
    prompts: list[Prompt] = []
    chars_per_token_guess = 5  # generous: code averages ~3-4 chars per token
    for file_id in order:
        if len(prompts) == count:
            break
        try:
            text = corpus.read(file_id)
        except WorkloadError as exc:
            if isinstance(exc.__cause__, UnicodeDecodeError):
                report.skipped_undecodable.append(file_id)
                continue
            raise
        want = rng.randint(lo_tokens, hi_tokens)
        first = want * chars_per_token_guess
        last = len(text) - min_tail_chars
        starts = _line_starts(text, first, last)
        if not starts:
            continue  # file too short for a mid-file cut
        cut = rng.choice(starts)
        ids = list(encode(text[max(0, cut - first) : cut]))
        if len(ids) <= want:
            continue  # the window's first token may be cut mid-word; keep only whole ones
        prompts.append(Prompt(corpus.lang, file_id, cut, tuple(ids[-want:])))
    if len(prompts) < count:
        raise WorkloadError(
            f"{corpus.lang} corpus {str(corpus.path)!r} yields only {len(prompts)} prompts of "
            f">= {lo_tokens} tokens from {len(eligible)} eligible files; {count} requested"
        )
    return prompts, report
