"""medbatch: classify medical images in batch with vision-language models.

```python
import medbatch
task = medbatch.get_task("ecg")
dataset = medbatch.ImageFolderDataset("data/ecg", task.folder_map, labels=task.labels)
result = medbatch.classify(dataset, task, runner, store="runs/ecg")
```

Importing medbatch never imports torch, transformers, vllm or snowflake: back-ends load
their SDKs when they are built.
"""

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
from medbatch.versions import package_versions as _package_versions

__version__ = _package_versions().get("medbatch", "0.0.0")

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
