"""The one exception hierarchy of medbatch.

```
MedbatchError
├── ConfigError            a setting is missing, unknown or invalid
│   └── UnknownNameError   a registry name (task, runner, dataset) does not exist
├── DatasetError           a dataset cannot be read as a whole (missing folder, bad manifest)
│   └── ImageLoadError     one image cannot be read (becomes that record's RecordError in a run)
├── RunnerError            a back-end failed as a whole (engine, server, job)
│   └── MissingDependencyError  an optional extra is not installed
└── RunStoreError          a run directory is unreadable, locked or inconsistent
```

Per-record failures during a run are *values* (`medbatch.records.RecordError`), never
exceptions: one broken image or one failed request must not stop a batch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ConfigError",
    "DatasetError",
    "ImageLoadError",
    "MedbatchError",
    "MissingDependencyError",
    "RunStoreError",
    "RunnerError",
    "UnknownNameError",
]


class MedbatchError(Exception):
    """Base class of every error medbatch raises on purpose."""


class ConfigError(MedbatchError):
    """A configuration value is missing, unknown or invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry name does not exist; the message suggests the closest ones.

    Args:
        kind: What was looked up ("task", "runner", "dataset").
        name: The name asked for.
        available: The names that exist.
    """

    def __init__(self, kind: str, name: str, available: Iterable[str]) -> None:
        self.kind = kind
        self.name = name
        self.available = sorted(available)
        close = difflib.get_close_matches(name, self.available, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        listed = ", ".join(self.available) or "none"
        super().__init__(f"Unknown {kind} {name!r}.{hint} Available: {listed}.")

    def __str__(self) -> str:
        # KeyError.__str__ would wrap the message in quotes.
        return str(self.args[0])


class DatasetError(MedbatchError):
    """A dataset cannot be read as a whole (missing folder, unreadable manifest)."""


class ImageLoadError(DatasetError):
    """One image cannot be read or decoded.

    Inside a run this never escapes: it becomes the record's `RecordError(kind="image_error")`.
    """


class RunnerError(MedbatchError):
    """A back-end failed as a whole: the engine did not start, the server is gone, a job failed."""


class MissingDependencyError(RunnerError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(f'{feature} needs {package}: pip install "medbatch[{extra}]"')


class RunStoreError(MedbatchError):
    """A run directory is unreadable, was written by another run, or is inconsistent."""
