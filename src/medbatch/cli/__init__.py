"""The `medbatch` command line (typer + rich).

Each command lives in a module of this package; importing the package registers them all.
"""

from __future__ import annotations

from medbatch.cli import commands, data, demo, evaluate  # noqa: F401 - registers commands
from medbatch.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `medbatch` console script."""
    app()
