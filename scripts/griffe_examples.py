"""Griffe extension for the docs build: read Google `Example:` sections as `Examples:`.

medbatch docstrings follow the Google style guide, which writes `Example:` (singular).
Griffe only treats `Examples:` as an examples section (where `>>>` lines become code);
`Example:` would otherwise render as prose, and markdown would read `x["a"][0]` as a link.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename `Example:` section headings to `Examples:` before docstrings are parsed."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        docstring = obj.docstring
        if docstring is not None and "Example:" in docstring.value:
            docstring.value = _EXAMPLE_HEADING.sub(r"\1Examples:", docstring.value)
