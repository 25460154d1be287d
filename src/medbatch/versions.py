"""Versions of the packages that shape results, for the run manifest."""

from __future__ import annotations

import platform
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, version

__all__ = ["package_versions"]

_PACKAGES = (
    "medbatch",
    "pydantic",
    "numpy",
    "pandas",
    "pillow",
    "torch",
    "transformers",
    "vllm",
    "snowflake-ml-python",
    "snowflake-snowpark-python",
    "httpx",
)


@cache
def package_versions() -> dict[str, str]:
    """Installed versions of medbatch and the libraries that affect answers.

    Reads package metadata only: it never imports torch or other heavy modules.
    """
    found = {"python": sys.version.split()[0], "platform": platform.platform(terse=True)}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found
