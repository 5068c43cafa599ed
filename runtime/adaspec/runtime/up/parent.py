"""`adaspec adapt` with the parent revision's directory found: the local actuator's adapt command.

The control plane names the parent by revision id only ({parent}); on one machine every candidate is a
directory under the speculator's runs directory, so this finds the one whose manifest.json names that
revision (the static draft for `static`) and runs `adaspec adapt --parent-artifact=DIR --parent=ID ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

STATIC = "static"


def find_parent(runs_dir: Path, static_draft: str, parent: str) -> str:
    """Return the directory of revision `parent` (the static draft for `static` or none).

    Raises ValueError naming the revision and the runs directory when no run wrote it.
    """
    if parent in ("", STATIC):
        return static_draft
    # a run's candidate: RUN/manifest.json, or RUN/revision/manifest.json (beside the run's adapt.log)
    for manifest in sorted([*runs_dir.glob("*/manifest.json"), *runs_dir.glob("*/*/manifest.json")]):
        try:
            revision = json.loads(manifest.read_text()).get("revision")
        except (OSError, ValueError):
            continue
        if revision == parent:
            return str(manifest.parent)
    raise ValueError(f"--parent {parent!r}: no revision directory under {runs_dir} holds it")


def main(argv: Sequence[str] | None = None) -> int:
    """Resolve the parent, then run `adaspec ARGS...`; return its exit code (2 when no parent is found)."""
    p = argparse.ArgumentParser(prog="python -m adaspec.runtime.up.parent")
    p.add_argument("--runs-dir", type=Path, required=True)
    p.add_argument("--static-draft", required=True)
    p.add_argument("--parent", default="")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- adapt FLAGS...")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command[:1] != ["adapt"]:
        p.error("expected '-- adapt FLAGS...' after the options")
    try:
        artifact = find_parent(args.runs_dir, args.static_draft, args.parent)
    except ValueError as exc:
        print(f"adaspec adapt: error: {exc}", file=sys.stderr)
        return 2
    from adaspec.cli.main import main as adaspec

    return adaspec([*command, f"--parent-artifact={artifact}", f"--parent={args.parent or STATIC}"])


if __name__ == "__main__":
    sys.exit(main())
