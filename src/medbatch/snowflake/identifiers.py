"""Validate Snowflake names and stage locations before they reach any SQL text.

Snowflake cannot bind identifiers (`CREATE STAGE ?` is not valid) and `LS`/`PUT` take no
bind variables at all, so every name that is interpolated into SQL goes through here first.
We accept only plain, unquoted identifiers (`[A-Za-z_][A-Za-z0-9_$]*`, at most 255 chars)
and conservative stage paths; anything with quotes, semicolons, whitespace or comment
markers is rejected with a message that names the setting, before a single statement runs.

```
@MEDGEMMA_DEMO.PUBLIC.ECG_STAGE/ecg_data_new_version/normal_ecg_images/
 └──── stage (1–3 identifiers) ─┘└──────────────── path ──────────────┘
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medbatch.snowflake import SnowflakeIdentifierError

__all__ = [
    "StageLocation",
    "qualified_name",
    "validate_identifier",
    "validate_stage_path",
    "validate_unquoted_stage_path",
]

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,254}")
# Folder and file names seen in medical image sets: letters, digits, `_ - . ( ) + =`,
# spaces; never quotes, backslashes, semicolons or comment markers.
_PATH = re.compile(r"[A-Za-z0-9_\-.()+= /]*")
# What may stand unquoted after `@stage/` in SQL text that we do not write ourselves.
_UNQUOTED_PATH = re.compile(r"[A-Za-z0-9_\-./]*")


def validate_identifier(name: str, what: str = "identifier") -> str:
    """Return `name` if it is a plain unquoted Snowflake identifier.

    Args:
        name: The name, e.g. `MEDGEMMA_DEMO`.
        what: What the name is (`database`, `compute pool`, ...), for the message.

    Returns:
        The name, unchanged.

    Raises:
        SnowflakeIdentifierError: `name` is empty or contains anything but letters, digits,
            `_` and `$` (quotes, dots, spaces, `;`, `--`, `/*` included).

    Example:
        >>> validate_identifier("ECG_STAGE", "stage")
        'ECG_STAGE'
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise SnowflakeIdentifierError(
            f"{what} name {name!r} is not a plain Snowflake identifier: use letters, digits, "
            "'_' and '$' only, starting with a letter or '_' (quoted names are not accepted)"
        )
    return name


def qualified_name(name: str, what: str = "object") -> str:
    """Validate a 1–3 part dotted name (`NAME`, `SCHEMA.NAME` or `DB.SCHEMA.NAME`).

    Raises:
        SnowflakeIdentifierError: A part is not a plain identifier or there are too many.
    """
    parts = name.split(".") if isinstance(name, str) else [name]
    if not 1 <= len(parts) <= 3:
        raise SnowflakeIdentifierError(f"{what} name {name!r} has more than three parts")
    for part in parts:
        validate_identifier(part, what)
    return ".".join(parts)


def validate_stage_path(path: str, what: str = "stage path") -> str:
    """Return a normalised relative stage path (no leading slash, no `..`).

    Raises:
        SnowflakeIdentifierError: The path has characters outside `[A-Za-z0-9_-.()+= /]`
            or climbs with `..`.
    """
    if not _PATH.fullmatch(path) or ".." in path.split("/") or "--" in path or "/*" in path:
        raise SnowflakeIdentifierError(
            f"{what} {path!r} may only contain letters, digits, spaces and _ - . ( ) + = /"
        )
    return "/".join(part for part in path.split("/") if part)


def validate_unquoted_stage_path(path: str, what: str = "stage path") -> str:
    """Like `validate_stage_path`, for paths the Snowflake SDK puts into SQL unquoted.

    snowflake-ml-python 2.x writes the output location into `EXECUTE INFERENCE JOB SERVICE
    ... FROM @<output>/_snowflake_temporary/<uuid>/` without quotes, so a space (or `(`,
    `+`, `=`) there breaks the statement after the input has already been copied. Such
    paths are refused before anything runs.

    Raises:
        SnowflakeIdentifierError: The path has characters outside `[A-Za-z0-9_-./]`.
    """
    normalised = validate_stage_path(path, what)
    if not _UNQUOTED_PATH.fullmatch(normalised):
        raise SnowflakeIdentifierError(
            f"{what} {path!r} may only contain letters, digits and _ - . / here: "
            "snowflake-ml-python writes it unquoted into SQL (FROM @stage/path/)"
        )
    return normalised


@dataclass(frozen=True)
class StageLocation:
    """A validated `@stage/path` location.

    Attributes:
        stage: The stage name, 1–3 dotted identifiers (`DB.SCHEMA.STAGE`).
        path: A relative folder inside the stage, without leading or trailing slash.

    Example:
        >>> loc = StageLocation.parse("@DB.PUBLIC.ECG_STAGE/results")
        >>> loc.url, loc.child("job_1").url
        ('@DB.PUBLIC.ECG_STAGE/results/', '@DB.PUBLIC.ECG_STAGE/results/job_1/')
    """

    stage: str
    path: str = ""

    def __post_init__(self) -> None:
        qualified_name(self.stage, "stage")
        object.__setattr__(self, "path", validate_stage_path(self.path))

    @classmethod
    def parse(cls, location: str) -> StageLocation:
        """Parse `@STAGE[/path]` (the `@` is optional).

        Raises:
            SnowflakeIdentifierError: The stage name or path is not acceptable.
        """
        text = location[1:] if location.startswith("@") else location
        stage, _, path = text.partition("/")
        return cls(stage=stage, path=path)

    @property
    def stage_name(self) -> str:
        """The last part of the stage name (how `LS` prefixes the names it lists)."""
        return self.stage.rsplit(".", 1)[-1]

    @property
    def url(self) -> str:
        """`@STAGE/path/` with a trailing slash (a folder), or `@STAGE/` for the root."""
        return f"@{self.stage}/{self.path}/" if self.path else f"@{self.stage}/"

    def child(self, *parts: str) -> StageLocation:
        """A sub-folder of this location."""
        joined = "/".join(p.strip("/") for p in (self.path, *parts) if p.strip("/"))
        return StageLocation(self.stage, joined)

    def file(self, relative: str) -> str:
        """The full `@STAGE/path/relative` of a file under this location."""
        rel = validate_stage_path(relative, "file path")
        return f"{self.url}{rel}"

    def quoted(self) -> str:
        """The location in single quotes for `LS`/`PUT` text (safe: quotes are rejected)."""
        return f"'{self.url}'"
