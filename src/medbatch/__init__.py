"""medbatch: classify medical images in batch with vision-language models.

```python
import medbatch
task = medbatch.get_task("ecg")
dataset = medbatch.ImageFolderDataset("data/ecg", task.folder_map, labels=task.labels)
result = medbatch.classify(dataset, task, runner, store="runs/ecg")
```

Importing medbatch never imports torch, transformers, vllm or snowflake: back-ends load
their SDKs when they are built. The names below load their module on first use (PEP 562), so
`import medbatch` (and `medbatch --help`) does not pay for pandas or pyarrow either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medbatch.config import RunConfig, load_config
    from medbatch.datasets.base import Dataset, ListDataset
    from medbatch.datasets.folder import ImageFolderDataset
    from medbatch.errors import (
        ConfigError,
        DatasetError,
        ImageLoadError,
        MedbatchError,
        MissingDependencyError,
        RunnerError,
        RunStoreError,
        UnknownNameError,
    )
    from medbatch.labels import Label, LabelSet
    from medbatch.parsing.base import LabelParser
    from medbatch.pipeline import RunResult, classify
    from medbatch.prompts.base import PromptTemplate
    from medbatch.prompts.chat import ChatPromptTemplate
    from medbatch.records import (
        AnswerStatus,
        ChatMessage,
        GenerationParams,
        ImagePart,
        ImageRef,
        InferenceRequest,
        InferenceResponse,
        LabelConstraint,
        ParseResult,
        Prediction,
        Record,
        RecordError,
        TextPart,
        Usage,
    )
    from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig
    from medbatch.runners.replay import ReplayRunner
    from medbatch.store import RunManifest, RunStore, load_predictions
    from medbatch.tasks.base import Task
    from medbatch.tasks.registry import get_task, list_tasks, register_task

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "AnswerStatus": "medbatch.records",
    "BatchRunner": "medbatch.runners.base",
    "ChatMessage": "medbatch.records",
    "ChatPromptTemplate": "medbatch.prompts.chat",
    "ConfigError": "medbatch.errors",
    "Dataset": "medbatch.datasets.base",
    "DatasetError": "medbatch.errors",
    "GenerationParams": "medbatch.records",
    "ImageFolderDataset": "medbatch.datasets.folder",
    "ImageLoadError": "medbatch.errors",
    "ImagePart": "medbatch.records",
    "ImageRef": "medbatch.records",
    "InferenceRequest": "medbatch.records",
    "InferenceResponse": "medbatch.records",
    "Label": "medbatch.labels",
    "LabelConstraint": "medbatch.records",
    "LabelParser": "medbatch.parsing.base",
    "LabelSet": "medbatch.labels",
    "ListDataset": "medbatch.datasets.base",
    "MedbatchError": "medbatch.errors",
    "MissingDependencyError": "medbatch.errors",
    "ParseResult": "medbatch.records",
    "Prediction": "medbatch.records",
    "PromptTemplate": "medbatch.prompts.base",
    "Record": "medbatch.records",
    "RecordError": "medbatch.records",
    "ReplayRunner": "medbatch.runners.replay",
    "RunConfig": "medbatch.config",
    "RunManifest": "medbatch.store",
    "RunResult": "medbatch.pipeline",
    "RunStore": "medbatch.store",
    "RunStoreError": "medbatch.errors",
    "RunnerCapabilities": "medbatch.runners.base",
    "RunnerConfig": "medbatch.runners.base",
    "RunnerError": "medbatch.errors",
    "Task": "medbatch.tasks.base",
    "TextPart": "medbatch.records",
    "UnknownNameError": "medbatch.errors",
    "Usage": "medbatch.records",
    "classify": "medbatch.pipeline",
    "get_task": "medbatch.tasks.registry",
    "list_tasks": "medbatch.tasks.registry",
    "load_config": "medbatch.config",
    "load_predictions": "medbatch.store",
    "register_task": "medbatch.tasks.registry",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from medbatch.versions import package_versions

        value: Any = package_versions().get("medbatch", "0.0.0")
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'medbatch' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    # The public names, loaded or not; typing helpers imported above are not part of it.
    return sorted(set(__all__) | {name for name in globals() if name.startswith("_")})


__all__ = [
    "AnswerStatus",
    "BatchRunner",
    "ChatMessage",
    "ChatPromptTemplate",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "GenerationParams",
    "ImageFolderDataset",
    "ImageLoadError",
    "ImagePart",
    "ImageRef",
    "InferenceRequest",
    "InferenceResponse",
    "Label",
    "LabelConstraint",
    "LabelParser",
    "LabelSet",
    "ListDataset",
    "MedbatchError",
    "MissingDependencyError",
    "ParseResult",
    "Prediction",
    "PromptTemplate",
    "Record",
    "RecordError",
    "ReplayRunner",
    "RunConfig",
    "RunManifest",
    "RunResult",
    "RunStore",
    "RunStoreError",
    "RunnerCapabilities",
    "RunnerConfig",
    "RunnerError",
    "Task",
    "TextPart",
    "UnknownNameError",
    "Usage",
    "__version__",
    "classify",
    "get_task",
    "list_tasks",
    "load_config",
    "load_predictions",
    "register_task",
]
