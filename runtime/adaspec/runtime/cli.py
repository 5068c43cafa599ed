"""Subcommands of the runtime part: generate, fixtures, bench (registered by adaspec.cli.main)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the runtime's subcommands to the `adaspec` parser."""
    del sub
