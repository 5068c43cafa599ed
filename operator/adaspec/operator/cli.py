"""Subcommands of the operator part (registered by adaspec.cli.main)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this part's subcommands to the `adaspec` parser (none yet)."""
    del sub
