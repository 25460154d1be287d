"""Lazy name → object tables, one per kind of plug-in, extended by entry points.

Built-in entries are `"module:attribute"` strings imported on first use, so naming a runner
never imports its heavy SDK until it is actually built. Third-party packages add entries
through entry-point groups (`medbatch.tasks`, `medbatch.runners`, `medbatch.datasets`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from medbatch.errors import ConfigError, UnknownNameError

__all__ = ["DATASETS", "RUNNERS", "Registry", "import_object"]

T = TypeVar("T")


def import_object(path: str) -> Any:
    """Import `"package.module:attribute"`.

    Raises:
        ConfigError: The path is malformed or the module/attribute does not exist.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{path!r} is not of the form 'package.module:attribute'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute)
    except AttributeError as exc:
        raise ConfigError(f"{module_name} has no attribute {attribute!r}") from exc


class Registry(Generic[T]):
    """Names of one kind of plug-in and where to find them.

    Args:
        kind: What the entries are, for error messages ("runner").
        builtins: Name → `"module:attribute"`.
        group: Entry-point group that third-party packages register under.
    """

    def __init__(self, kind: str, builtins: Mapping[str, str], group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._paths: dict[str, str] = dict(builtins)
        self._loaded: dict[str, T] = {}
        self._entry_points_read = False

    def _read_entry_points(self) -> None:
        if self._entry_points_read or self.group is None:
            return
        self._entry_points_read = True
        for entry in entry_points(group=self.group):
            self._paths.setdefault(entry.name, entry.value)

    def register(self, name: str, target: T | str) -> None:
        """Add or replace an entry: an object, or a `"module:attribute"` path."""
        if isinstance(target, str):
            self._paths[name] = target
            self._loaded.pop(name, None)
        else:
            self._loaded[name] = target

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._read_entry_points()
        return sorted(set(self._paths) | set(self._loaded))

    def get(self, name: str) -> T:
        """The entry called `name`, imported on first use.

        Raises:
            UnknownNameError: No such name; the message suggests close ones.
        """
        if name in self._loaded:
            return self._loaded[name]
        self._read_entry_points()
        if name not in self._paths:
            raise UnknownNameError(self.kind, name, self.names())
        loaded: T = import_object(self._paths[name])
        self._loaded[name] = loaded
        return loaded


RUNNERS: Registry[Any] = Registry(
    "runner",
    {
        "replay": "medbatch.runners.replay:ReplayRunner",
        "transformers": "medbatch.runners.transformers:TransformersRunner",
        "vllm": "medbatch.runners.vllm:VLLMRunner",
        "openai": "medbatch.runners.openai:OpenAICompatibleRunner",
        "snowflake": "medbatch.runners.snowflake:SnowflakeBatchRunner",
        "ray": "medbatch.runners.ray:RayRunner",
    },
    group="medbatch.runners",
)
"""Runner kinds: the `kind` of a `[runner]` table."""

DATASETS: Registry[Any] = Registry(
    "dataset",
    {
        "folder": "medbatch.datasets.folder:ImageFolderDataset",
        "kaggle": "medbatch.datasets.kaggle:KaggleDataset",
        "manifest": "medbatch.datasets.manifest:ManifestDataset",
        "dicom": "medbatch.datasets.dicom:DicomDataset",
        "synthetic-ecg": "medbatch.datasets.synthetic:SyntheticECGDataset",
        "snowflake-stage": "medbatch.datasets.stage:SnowflakeStageDataset",
    },
    group="medbatch.datasets",
)
"""Dataset kinds: the `kind` of a `[dataset]` table."""
