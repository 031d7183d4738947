"""What a `theatrum` command ends with: its exit codes, and the error for a wrong argument or input."""

from __future__ import annotations

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(Exception):
    """A command-line argument or input is wrong (exit code 2, one line naming it)."""
