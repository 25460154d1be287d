"""The typer application and the error handling every command shares.

Every failure a user can cause ends in one line on stderr and a non-zero exit code:

- medbatch's own errors (and missing or unreadable files): `error: <message>`, code 2 for bad
  input (config, dataset, file not found), 1 otherwise;
- usage errors (an unknown option, `--limit -1`): `error: <click's message> (see medbatch
  COMMAND --help)`, code 2;
- anything else is a bug: `error: unexpected <Type>: <message>`, code 1.

`--debug` shows the full traceback instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from medbatch.errors import MedbatchError
from medbatch.terminal import PrintableFormatter, markup

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
    "flag",
    "handle_errors",
    "print_traceback",
    "setup_logging",
    "state",
]

# typer >= 0.20 vendors click as `typer._click`; older typer uses click itself. Take the
# exception classes from wherever typer's own BadParameter lives.
_click_errors = sys.modules[typer.BadParameter.__module__]
_ClickException: type[Exception] = _click_errors.ClickException
_NoArgsIsHelp: type[Exception] = getattr(_click_errors, "NoArgsIsHelpError", _ClickException)
_PASS_THROUGH = (typer.Exit, typer.Abort, _ClickException)

P = ParamSpec("P")
R = TypeVar("R")


class _OneLineErrorsGroup(TyperGroup):
    """Usage errors as one line on stderr instead of click's multi-line panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _ClickException as exc:
            error: Any = exc
            if isinstance(exc, _NoArgsIsHelp):
                error.show()
            else:
                ctx = getattr(error, "ctx", None)
                where = ctx.command_path if ctx is not None else "medbatch"
                _print_error(f"{error.format_message()} (see {where} --help)")
            return _exit(int(error.exit_code), standalone_mode)
        except typer.Abort:
            err_console.print("[yellow]interrupted[/]")
            return _exit(130, standalone_mode)
        code = result if isinstance(result, int) else 0
        return _exit(code, standalone_mode) if standalone_mode else result


def _exit(code: int, standalone_mode: bool) -> int:
    if standalone_mode:
        sys.exit(code)
    return code


app = typer.Typer(
    name="medbatch",
    help="Classify medical images in batch with vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineErrorsGroup,
)
console = Console()
err_console = Console(stderr=True)


def flag(default: bool, *decls: str, help: str) -> Any:
    """A boolean option that takes no value (help shows no `<bool>`, which invites one)."""
    return typer.Option(default, *decls, help=help, metavar="")


class _State:
    debug = False


state = _State()


@app.callback()
def _main(
    debug: bool = flag(False, "--debug", help="Show full tracebacks on errors."),
    verbose: bool = flag(False, "--verbose", "-v", help="Log progress details."),
) -> None:
    """medbatch: classify medical images in batch with vision-language models.

    Start with `medbatch demo` (offline, no credentials), then `medbatch run CONFIG.toml`.
    """
    state.debug = debug
    setup_logging(verbose=verbose)


def setup_logging(*, verbose: bool) -> None:
    """Log to stderr: WARNING, or medbatch's own INFO lines with `--verbose`.

    Other libraries stay at WARNING even with `--verbose` (httpx's INFO line per request
    names the URL), and every line passes the redacting filter on the way out. Log records
    quote file names and server answers: no escape sequence reaches the terminal.
    """
    from medbatch.redaction import install_log_redaction

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
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
    """Turn every error into one red line and a non-zero exit code (see the module doc).

    With `--debug` the full chained traceback is printed instead, redacted.
    """

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except (MedbatchError, OSError) as exc:
            if state.debug:
                print_traceback(exc)
            else:
                _print_error(_one_line(exc))
            raise typer.Exit(code=EXIT_BAD_INPUT if _is_input_error(exc) else EXIT_FAILED) from None
        except KeyboardInterrupt as exc:
            from medbatch.pipeline import RunTerminated

            terminated = isinstance(exc, RunTerminated)
            what = "terminated (SIGTERM)" if terminated else "interrupted"
            err_console.print(f"[yellow]{what}[/]: resume with the same command and --resume")
            raise typer.Exit(code=EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from None
        except Exception as exc:
            if state.debug:
                print_traceback(exc)
            else:
                _print_error(
                    f"unexpected {type(exc).__name__}: {_one_line(exc)} "
                    "(rerun with --debug for the traceback)"
                )
            raise typer.Exit(code=EXIT_FAILED) from None

    return wrapper


def print_traceback(exc: BaseException) -> None:
    """Print `exc`'s full chained traceback to stderr with credentials redacted.

    Chained exceptions (a connector error under ours) can quote connection parameters.
    """
    from medbatch.redaction import format_exception

    sys.stderr.write(format_exception(exc))
    sys.stderr.flush()


def _print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {markup(message)}", highlight=False, soft_wrap=True)


def _one_line(exc: BaseException) -> str:
    from medbatch.redaction import redact

    return redact(" ".join(str(exc).split())) or type(exc).__name__


def _is_input_error(exc: BaseException) -> bool:
    from medbatch.errors import ConfigError, DatasetError

    return isinstance(exc, (ConfigError, DatasetError, FileNotFoundError, FileExistsError))


def print_json(payload: Any) -> None:
    """Print JSON to stdout without rich markup (for `--json` flags)."""
    import json

    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
