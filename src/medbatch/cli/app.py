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

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RECORDS_FAILED",
    "EXIT_TERMINATED",
    "app",
    "console",
    "err_console",
    "handle_errors",
    "print_traceback",
    "setup_logging",
    "state",
]

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
    setup_logging(verbose=verbose)


def setup_logging(*, verbose: bool) -> None:
    """Log to stderr: WARNING, or medbatch's own INFO lines with `--verbose`.

    Other libraries stay at WARNING even with `--verbose` (httpx's INFO line per request
    names the URL), and every line passes the redacting filter on the way out.
    """
    from medbatch.redaction import install_log_redaction

    logging.basicConfig(
        level=logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("medbatch").setLevel(logging.INFO if verbose else logging.NOTSET)
    install_log_redaction(logging.getLogger().handlers)


EXIT_OK = 0
"""The command did what it was asked; for `run`: every record has an answer."""
EXIT_FAILED = 1
"""The command failed (for `run`: no record was answered, or the run stopped)."""
EXIT_BAD_INPUT = 2
"""Bad input: a config, dataset or file that cannot be used as given."""
EXIT_RECORDS_FAILED = 3
"""`run` finished, but some records ended in `error` (rerun with --resume --retry-failed)."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (SIGINT); resume with the same command."""
EXIT_TERMINATED = 143
"""Stopped by SIGTERM (a scheduler, `docker stop`); resume with the same command."""


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn medbatch errors into one red line and exit code 1 (2 for bad input).

    With `--debug` the full chained traceback is printed instead, redacted.
    """

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (MedbatchError, FileNotFoundError, PermissionError) as exc:
            if state.debug:
                print_traceback(exc)
            else:
                err_console.print(
                    f"[bold red]error:[/] {escape(_one_line(exc))}",
                    highlight=False,
                    soft_wrap=True,
                )
            raise typer.Exit(code=EXIT_BAD_INPUT if _is_input_error(exc) else EXIT_FAILED) from None
        except KeyboardInterrupt as exc:
            from medbatch.pipeline import RunTerminated

            terminated = isinstance(exc, RunTerminated)
            what = "terminated (SIGTERM)" if terminated else "interrupted"
            err_console.print(f"[yellow]{what}[/]: resume with the same command and --resume")
            raise typer.Exit(code=EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None

    return wrapper


def print_traceback(exc: BaseException) -> None:
    """Print `exc`'s full chained traceback to stderr with credentials redacted.

    Chained exceptions (a connector error under ours) can quote connection parameters.
    """
    from medbatch.redaction import format_exception

    sys.stderr.write(format_exception(exc))
    sys.stderr.flush()


def _one_line(exc: BaseException) -> str:
    from medbatch.redaction import redact

    return redact(" ".join(str(exc).split())) or type(exc).__name__


def _is_input_error(exc: BaseException) -> bool:
    from medbatch.errors import ConfigError, DatasetError

    return isinstance(exc, (ConfigError, DatasetError, FileNotFoundError))


def print_json(payload: Any) -> None:
    """Print JSON to stdout without rich markup (for `--json` flags)."""
    import json

    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
