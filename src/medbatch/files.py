"""Small file helpers shared across modules: hashing and reading TOML with clear errors."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from medbatch.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a backport
    import tomli as tomllib

__all__ = ["read_toml", "sha256_file"]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's content, read in 1 MiB blocks (never whole in memory)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file.

    Args:
        path: The file.
        what: What the file is, for messages ("config file", "task file").

    Raises:
        ConfigError: The file is missing, unreadable or not valid TOML (the message names it).
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from exc
