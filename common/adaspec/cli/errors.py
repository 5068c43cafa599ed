"""The error type every subcommand raises for bad user input."""

from __future__ import annotations


class CommandError(Exception):
    """A user-facing error: printed as one line on stderr, exit code 2."""
