"""The `medbatch` command line (typer + rich).

Each command lives in a module of this package; importing the package registers them all.
"""

from __future__ import annotations

from medbatch.cli import commands, data, demo, evaluate  # noqa: F401 - registers commands
from medbatch.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `medbatch` console script."""
    from medbatch.cli.app import EXIT_FAILED, print_traceback

    try:
        app()
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        # An error no command turned into a message (a bug, an SDK's own exception): its
        # traceback, redacted, instead of Python's, which could quote credentials.
        print_traceback(exc)
        raise SystemExit(EXIT_FAILED) from None
