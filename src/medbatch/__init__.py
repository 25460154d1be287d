"""medbatch: classify medical images in batch with vision-language models.

```python
import medbatch
task = medbatch.get_task("ecg")
dataset = medbatch.ImageFolderDataset("data/ecg", task.folder_map, labels=task.labels)
result = medbatch.classify(dataset, task, runner, store="runs/ecg")
evaluation = result.evaluate()  # or medbatch.evaluate("runs/ecg")
page = result.report()  # or medbatch.write_report("runs/ecg")
```

Importing medbatch never imports torch, transformers, vllm or snowflake: back-ends load
their SDKs when they are built (the runners exported here load their module on first use
too). The names below load their module on first use (PEP 562), so
`import medbatch` (and `medbatch --help`) does not pay for pandas or pyarrow either.
"""

from __future__ import annotations

import importlib
import warnings
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
    from medbatch.evaluation import compare, evaluate
    from medbatch.labels import Label, LabelSet
    from medbatch.parsing.answer import FinalAnswerParser
    from medbatch.parsing.base import LabelParser
    from medbatch.parsing.json import JSONLabelParser
    from medbatch.pipeline import GuardrailOptions, RunResult, classify
    from medbatch.prompts.base import PromptTemplate
    from medbatch.prompts.chat import ChatPromptTemplate
    from medbatch.records import (
        AnswerStatus,
        GenerationParams,
        ImageRef,
        Prediction,
        Record,
    )
    from medbatch.report import write_report
    from medbatch.runners.base import BatchRunner
    from medbatch.runners.openai import OpenAICompatibleRunner
    from medbatch.runners.replay import ReplayRunner
    from medbatch.runners.snowflake import SnowflakeBatchRunner
    from medbatch.runners.transformers import TransformersRunner
    from medbatch.runners.vllm import VLLMRunner
    from medbatch.store import RunManifest, RunStore, load_predictions
    from medbatch.tasks.base import Task
    from medbatch.tasks.registry import get_task, list_tasks, register_task

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "AnswerStatus": "medbatch.records",
    "BatchRunner": "medbatch.runners.base",
    "ChatPromptTemplate": "medbatch.prompts.chat",
    "ConfigError": "medbatch.errors",
    "Dataset": "medbatch.datasets.base",
    "DatasetError": "medbatch.errors",
    "FinalAnswerParser": "medbatch.parsing.answer",
    "GenerationParams": "medbatch.records",
    "GuardrailOptions": "medbatch.pipeline",
    "ImageFolderDataset": "medbatch.datasets.folder",
    "ImageLoadError": "medbatch.errors",
    "ImageRef": "medbatch.records",
    "JSONLabelParser": "medbatch.parsing.json",
    "Label": "medbatch.labels",
    "LabelParser": "medbatch.parsing.base",
    "LabelSet": "medbatch.labels",
    "ListDataset": "medbatch.datasets.base",
    "MedbatchError": "medbatch.errors",
    "MissingDependencyError": "medbatch.errors",
    "OpenAICompatibleRunner": "medbatch.runners.openai",
    "Prediction": "medbatch.records",
    "PromptTemplate": "medbatch.prompts.base",
    "Record": "medbatch.records",
    "ReplayRunner": "medbatch.runners.replay",
    "RunConfig": "medbatch.config",
    "RunManifest": "medbatch.store",
    "RunResult": "medbatch.pipeline",
    "RunStore": "medbatch.store",
    "RunStoreError": "medbatch.errors",
    "RunnerError": "medbatch.errors",
    "SnowflakeBatchRunner": "medbatch.runners.snowflake",
    "Task": "medbatch.tasks.base",
    "TransformersRunner": "medbatch.runners.transformers",
    "UnknownNameError": "medbatch.errors",
    "VLLMRunner": "medbatch.runners.vllm",
    "classify": "medbatch.pipeline",
    "compare": "medbatch.evaluation",
    "evaluate": "medbatch.evaluation",
    "get_task": "medbatch.tasks.registry",
    "list_tasks": "medbatch.tasks.registry",
    "load_config": "medbatch.config",
    "load_predictions": "medbatch.store",
    "register_task": "medbatch.tasks.registry",
    "write_report": "medbatch.report",
}


# Plumbing for back-end and parser authors, exported here before 0.2. They live in
# `medbatch.records` and `medbatch.runners` and are no longer in `__all__` or `dir()`; the old
# spelling still resolves, with a DeprecationWarning naming the new home.
_MOVED: dict[str, str] = {
    "ChatMessage": "medbatch.records",
    "ImagePart": "medbatch.records",
    "InferenceRequest": "medbatch.records",
    "InferenceResponse": "medbatch.records",
    "LabelConstraint": "medbatch.records",
    "ParseResult": "medbatch.records",
    "RecordError": "medbatch.records",
    "RunnerCapabilities": "medbatch.runners",
    "RunnerConfig": "medbatch.runners",
    "TextPart": "medbatch.records",
    "Usage": "medbatch.records",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        home = _MOVED[name]
        warnings.warn(
            f"medbatch.{name} is deprecated: import it from {home} (from {home} import {name})",
            DeprecationWarning,
            stacklevel=2,
        )
        # Not cached in globals(): every old-style use warns, not only the first.
        return getattr(importlib.import_module(home), name)
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
    "ChatPromptTemplate",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "FinalAnswerParser",
    "GenerationParams",
    "GuardrailOptions",
    "ImageFolderDataset",
    "ImageLoadError",
    "ImageRef",
    "JSONLabelParser",
    "Label",
    "LabelParser",
    "LabelSet",
    "ListDataset",
    "MedbatchError",
    "MissingDependencyError",
    "OpenAICompatibleRunner",
    "Prediction",
    "PromptTemplate",
    "Record",
    "ReplayRunner",
    "RunConfig",
    "RunManifest",
    "RunResult",
    "RunStore",
    "RunStoreError",
    "RunnerError",
    "SnowflakeBatchRunner",
    "Task",
    "TransformersRunner",
    "UnknownNameError",
    "VLLMRunner",
    "__version__",
    "classify",
    "compare",
    "evaluate",
    "get_task",
    "list_tasks",
    "load_config",
    "load_predictions",
    "register_task",
    "write_report",
]
