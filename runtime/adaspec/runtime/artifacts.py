"""Draft revisions on disk: safetensors + config + a manifest with sha256 of every file; never pickles.

Layout (docs/CONTRACTS.md): model.safetensors, config.json, manifest.json with `revision`, `parent`,
`target_model`, `tokenizer_sha256`, `files` (name -> sha256), `training_window`, `metrics`, `created`.
A revision is loaded only if every listed file matches its digest and the tokenizer hash matches the
target's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adaspec.runtime.models import PICKLE_SUFFIXES, load_causal_lm

MANIFEST = "manifest.json"


class ArtifactError(ValueError):
    """A revision directory is incomplete, tampered with, or for another tokenizer."""


class ArtifactNotFound(ArtifactError):
    """A revision directory, its manifest or a file it lists does not exist."""


class ArtifactMismatch(ArtifactError):
    """A revision whose checksums, id or tokenizer do not match what was expected."""


def manifest_sha256(rev_dir: Path) -> str:
    """Hex sha256 of a revision's manifest.json (the digest that names a revision in the control plane)."""
    path = rev_dir / MANIFEST
    if not path.is_file():
        raise ArtifactNotFound(f"revision {str(rev_dir)!r} has no {MANIFEST}")
    return sha256_file(path)


@dataclass(frozen=True)
class Manifest:
    """What manifest.json holds."""

    revision: str
    parent: str | None
    target_model: str
    tokenizer_sha256: str
    files: dict[str, str]
    training_window: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    created: str = ""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_revision(
    model: Any,
    out_dir: Path,
    *,
    revision: str,
    parent: str | None,
    target_model: str,
    tokenizer_sha256: str,
    training_window: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    counts: Any | None = None,
) -> Manifest:
    """Write a draft model as a revision directory (atomically: a temp dir renamed into place), with
    `counts` (a torch tensor [vocab], its reduced vocabulary's ranking) as vocab.safetensors if given."""
    if not revision or "/" in revision:
        raise ArtifactError(f"revision id must be a non-empty name without '/', got {revision!r}")
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if counts is not None:
        from adaspec.runtime.proposers.vocab import save_counts

        save_counts(tmp, counts)
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    manifest = Manifest(
        revision=revision,
        parent=parent,
        target_model=target_model,
        tokenizer_sha256=tokenizer_sha256,
        files=files,
        training_window=training_window or {},
        metrics=metrics or {},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    (tmp / MANIFEST).write_text(json.dumps(asdict(manifest), indent=1, sort_keys=True))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return manifest


def read_manifest(rev_dir: Path, expected_tokenizer_sha256: str) -> Manifest:
    """Parse and check a revision's manifest: every file's digest, no pickles, the right tokenizer."""
    path = rev_dir / MANIFEST
    if not path.is_file():
        raise ArtifactNotFound(f"revision {str(rev_dir)!r} has no {MANIFEST}")
    try:
        manifest = Manifest(**json.loads(path.read_text()))
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"revision {str(rev_dir)!r} has a malformed {MANIFEST}: {exc}") from None
    pickles = [p.name for p in rev_dir.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise ArtifactError(
            f"revision {str(rev_dir)!r} contains pickle files {pickles}; only safetensors load"
        )
    if not any(name.endswith(".safetensors") for name in manifest.files):
        raise ArtifactError(f"revision {str(rev_dir)!r} lists no safetensors weights")
    for name, digest in manifest.files.items():
        f = rev_dir / name
        if "/" in name or not f.is_file():
            raise ArtifactNotFound(f"revision {str(rev_dir)!r} is missing {name!r}")
        if sha256_file(f) != digest:
            raise ArtifactMismatch(f"sha256 of {name!r} in {str(rev_dir)!r} does not match its manifest")
    if manifest.tokenizer_sha256 != expected_tokenizer_sha256:
        raise ArtifactMismatch(
            f"revision {manifest.revision!r} was trained for tokenizer {manifest.tokenizer_sha256[:12]}, "
            f"the target's is {expected_tokenizer_sha256[:12]}"
        )
    return manifest


def load_revision(rev_dir: Path, expected_tokenizer_sha256: str, device: str = "cpu") -> tuple[Any, Manifest]:
    """Return (draft model, manifest) after every check in read_manifest passes."""
    manifest = read_manifest(rev_dir, expected_tokenizer_sha256)
    return load_causal_lm(rev_dir, f"revision {manifest.revision}", device), manifest
