"""Make user strings (file names, record ids, messages) safe to show in a terminal.

File names and record ids come from disk or from a remote answer: they may hold rich markup
(`scan [copy] 2.jpg`, `[/x]`) or control characters (`\\x1b[2J` clears the screen). Rich
would read the first as styling, dropping text or raising `MarkupError`, and pass the second
to the terminal raw. Everything user-supplied that rich prints goes through `markup()` (in a
markup string) or `printable()` (in a `Text` or a non-markup print).
"""

from __future__ import annotations

import logging
import re

__all__ = ["PrintableFormatter", "markup", "printable"]

# C0 controls (tab and newline included: one record is one line), DEL, and C1 controls.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """`text` with every control character written as a visible escape (`\\x1b`).

    Args:
        text: Anything; its `str()` is used.
        keep_newlines: Leave line breaks as they are (for multi-line log records).

    Example:
        >>> printable("scan\\x1b[31m.jpg")
        'scan\\\\x1b[31m.jpg'
    """
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(lambda match: f"\\x{ord(match.group()):02x}", str(text))


class PrintableFormatter(logging.Formatter):
    """A logging formatter whose lines carry no terminal control characters."""

    def format(self, record: logging.LogRecord) -> str:
        """The formatted record, control characters escaped (line breaks kept)."""
        return printable(super().format(record), keep_newlines=True)


def markup(text: object) -> str:
    """`text` made printable and escaped for use inside a rich markup string.

    Example:
        >>> markup("scan [copy] 2.jpg")
        'scan \\\\[copy] 2.jpg'
    """
    from rich.markup import escape

    return escape(printable(text))
