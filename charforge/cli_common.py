"""What `charforge.cli` and `charforge.cli_run` share: the consoles, the exit codes, the usage error."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

EXIT_INVALID = 1
EXIT_USAGE = 2

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def usage_error(message: str) -> typer.Exit:
    """Print `error: MESSAGE` on stderr, control characters escaped; the caller raises the returned
    exit (code 2)."""
    from charforge.io import printable

    err.print(f"error: {escape(printable(message))}")
    return typer.Exit(EXIT_USAGE)
