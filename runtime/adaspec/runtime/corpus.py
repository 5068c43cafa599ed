"""Source code already on this machine, by language, split into train and held-out files.

The split is `workloads.is_heldout` (the drift benchmark's), so every training run and every benchmark agree
on which files are held out.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adaspec.runtime.workloads import extensions_for, is_heldout, is_source

SKIP_DIRS = {"test", "tests", "testdata", "__pycache__", "site-packages", "vendor", "idlelib", "turtledemo"}


def default_roots() -> dict[str, Path]:
    """Return the source trees found here: the Python standard library, Go's sources, C headers."""
    roots: dict[str, Path] = {"python": Path(sysconfig.get_paths()["stdlib"])}
    goroot = os.environ.get("GOROOT")
    if not goroot and shutil.which("go"):
        try:
            goroot = subprocess.run(
                ["go", "env", "GOROOT"], capture_output=True, text=True, check=True, timeout=30
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            goroot = None
    for cand in filter(None, [goroot, "/usr/local/go", "/usr/lib/go"]):
        if (Path(cand) / "src").is_dir():
            roots["go"] = Path(cand) / "src"
            break
    if Path("/usr/include").is_dir():
        roots["c"] = Path("/usr/include")
    return roots


@dataclass(frozen=True)
class SourceFile:
    """One source file of a language, with its path relative to the language root."""

    lang: str
    root: Path
    rel: str

    @property
    def path(self) -> Path:
        """Absolute path."""
        return self.root / self.rel

    @property
    def file_id(self) -> str:
        """The id `workloads` gives this file (its path under the resolved root), which the split hashes."""
        return str(self.root.resolve() / self.rel)

    def read(self) -> str:
        """Text of the file (undecodable bytes replaced)."""
        return self.path.read_text(encoding="utf-8", errors="replace")


def iter_sources(
    lang: str, root: Path, min_bytes: int = 2000, max_bytes: int = 200_000
) -> Iterator[SourceFile]:
    """Yield source files of `lang` (endings from workloads' table) under `root`, sorted, skipping tests,
    vendored code and huge files; raise ValueError for an unknown language or a missing directory."""
    exts = extensions_for(lang)
    if not root.is_dir():
        raise ValueError(f"{lang} source directory {str(root)!r} does not exist")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        for fn in sorted(filenames):
            if not is_source(fn, exts):
                continue
            p = Path(dirpath) / fn
            try:
                size = p.stat().st_size
            except OSError:
                continue
            if min_bytes <= size <= max_bytes:
                yield SourceFile(lang, root, str(p.relative_to(root)))


def collect(lang: str, root: Path, heldout: bool, max_bytes: int) -> list[SourceFile]:
    """Files of one split (train or held-out), in order, until max_bytes of source are collected."""
    out: list[SourceFile] = []
    total = 0
    for f in iter_sources(lang, root):
        if is_heldout(f.file_id) != heldout:
            continue
        out.append(f)
        total += f.path.stat().st_size
        if total >= max_bytes:
            break
    return out
