"""The typer application and the error handling every command shares."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from medbatch.errors import MedbatchError

__all__ = ["app", "console", "err_console", "handle_errors", "state"]

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="medbatch",
    help="Classify medical images in batch with vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class _State:
    debug = False


state = _State()


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """medbatch: classify medical images in batch with vision-language models.

    Start with `medbatch demo` (offline, no credentials), then `medbatch run CONFIG.toml`.
    """
    state.debug = debug
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn medbatch errors into one red line and exit code 1 (2 for bad input)."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (MedbatchError, FileNotFoundError, PermissionError) as exc:
            if state.debug:
                raise
            err_console.print(
                f"[bold red]error:[/] {escape(_one_line(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(code=2 if _is_input_error(exc) else 1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: resume with the same command and --resume")
            raise typer.Exit(code=130) from None

    return wrapper


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_input_error(exc: BaseException) -> bool:
    from medbatch.errors import ConfigError, DatasetError

    return isinstance(exc, (ConfigError, DatasetError, FileNotFoundError))


def print_json(payload: Any) -> None:
    """Print JSON to stdout without rich markup (for `--json` flags)."""
    import json

    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
