"""`RunConfig`: a whole run described in TOML, validated before anything starts.

```toml
output_dir = "runs/ecg-folder"

[task]
name = "ecg"          # a registered task
prompt = "cot-v1"     # optional prompt version

[dataset]
kind = "folder"       # registry name; other keys go to the dataset
root = "data/ecg"

[runner]
kind = "replay"       # registry name; other keys are the runner's <Class>Config
path = "answers.jsonl"

[params]              # optional GenerationParams
temperature = 0.0
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medbatch._validation import did_you_mean as _did_you_mean
from medbatch._validation import first_error as _first_error
from medbatch.datasets.base import Dataset
from medbatch.errors import ConfigError
from medbatch.files import read_toml
from medbatch.records import GenerationParams
from medbatch.registry import DATASETS, RUNNERS
from medbatch.runners.base import BatchRunner, RunnerConfig
from medbatch.tasks.base import Task
from medbatch.tasks.registry import get_task

__all__ = ["DatasetSection", "RunConfig", "RunnerSection", "TaskSection", "load_config"]


class TaskSection(BaseModel):
    """`[task]`: which task and prompt version."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="Registered task name, e.g. 'ecg', or a task file 'path/to/task.toml'."
    )
    prompt: str | None = Field(default=None, description="Prompt version; the task's default.")


class DatasetSection(BaseModel):
    """`[dataset]`: a dataset kind and its options."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(default="folder", description="Dataset registry name.")

    def options(self) -> dict[str, Any]:
        """The keys other than `kind`."""
        return dict(self.model_extra or {})


class RunnerSection(BaseModel):
    """`[runner]`: a runner kind and its settings."""

    model_config = ConfigDict(extra="allow")

    kind: str = Field(description="Runner registry name, e.g. 'transformers'.")

    def options(self) -> dict[str, Any]:
        """The keys other than `kind`."""
        return dict(self.model_extra or {})


class RunConfig(BaseModel):
    """A run: task, dataset, runner, parameters and where results go."""

    model_config = ConfigDict(extra="forbid")

    output_dir: Path = Field(description="Run directory for manifest and predictions.")
    task: TaskSection
    dataset: DatasetSection
    runner: RunnerSection
    params: GenerationParams | None = Field(
        default=None, description="Generation parameters; the task's defaults when absent."
    )
    constrained: bool = Field(default=False, description="Constrain answers to the labels.")
    limit: int | None = Field(default=None, gt=0, description="Only the first N records.")
    per_class: int | None = Field(
        default=None, gt=0, description="Stratified sample of N records per label."
    )
    seed: int = Field(default=0, description="Seed of the stratified sample.")

    def build_task(self) -> Task:
        """The configured task (with its prompt version)."""
        return get_task(self.task.name, prompt=self.task.prompt)

    def build_dataset(self, task: Task) -> Dataset:
        """The configured dataset, sampled if `per_class` is set.

        Raises:
            ConfigError: Unknown kind or invalid options.
        """
        dataset_cls = DATASETS.get(self.dataset.kind)
        _check_dataset_keys(self.dataset.kind, dataset_cls, self.dataset.options())
        try:
            dataset: Dataset = dataset_cls.from_options(self.dataset.options(), task)
        except TypeError as exc:
            raise ConfigError(f"[dataset] {self.dataset.kind}: {exc}") from exc
        if self.per_class is not None:
            dataset = dataset.sample(self.per_class, seed=self.seed)
        return dataset

    def build_runner(self) -> BatchRunner:
        """The configured runner (not yet started).

        Raises:
            ConfigError: Unknown kind or invalid settings (each named).
        """
        runner_cls = RUNNERS.get(self.runner.kind)
        config_cls: type[RunnerConfig] | None = runner_cls.config_class
        if config_cls is None:
            raise ConfigError(f"runner {self.runner.kind!r} cannot be built from a config")
        try:
            settings = config_cls.model_validate(self.runner.options())
        except ValidationError as exc:
            raise ConfigError(
                f"[runner] {self.runner.kind}: {_first_error(exc, config_cls)}"
            ) from exc
        try:
            runner: BatchRunner = runner_cls.from_config(settings)
        except ValueError as exc:  # a value pydantic let through (e.g. a URL's port)
            raise ConfigError(f"[runner] {self.runner.kind}: {exc}") from exc
        return runner


def _check_dataset_keys(kind: str, dataset_cls: type[Dataset], options: dict[str, Any]) -> None:
    """Unknown `[dataset]` keys, named with a did-you-mean, before the class sees them."""
    import inspect

    try:
        parameters = inspect.signature(dataset_cls.__init__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    # `labels` and friends come from the task; they are not for the config to set.
    known = [name for name in parameters if name not in ("self", "labels", "is_valid_file")]
    for key in options:
        if key not in parameters:
            raise ConfigError(f"[dataset] {kind}: unknown key {key!r}{_did_you_mean(key, known)}")


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a run configuration.

    Relative paths in `output_dir` and `[dataset]`/`[runner]`/`[runner.inner]` path-like
    keys (`root`, `path`, `model`) are resolved against the config file's folder.

    Raises:
        ConfigError: Missing file, invalid TOML or invalid settings, with the key named.
    """
    path = Path(path)
    raw = read_toml(path, "config file")
    base = path.parent
    task_table = raw.get("task")
    if isinstance(task_table, dict) and str(task_table.get("name", "")).endswith(".toml"):
        task_table["name"] = str(_resolve(base, task_table["name"]))
    if isinstance(raw.get("output_dir"), str):
        raw["output_dir"] = str(_resolve(base, raw["output_dir"]))
    runner_table = raw.get("runner")
    runner_tables = [runner_table]
    if isinstance(runner_table, dict):
        runner_tables.append(runner_table.get("inner"))  # `kind = "ray"`: `[runner.inner]`
    for table in (raw.get("dataset"), *runner_tables):
        if isinstance(table, dict):
            for key in ("root", "path", "manifest"):
                if isinstance(table.get(key), str):
                    table[key] = str(_resolve(base, table[key]))
    for table in runner_tables:
        if isinstance(table, dict) and isinstance(table.get("model"), str):
            table["model"] = _resolve_model(base, table["model"])
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc, RunConfig)}") from exc


def _resolve_model(base: Path, value: str) -> str:
    """A relative model path that names a folder next to the config; else the name as is.

    `model` is a hub name (`google/medgemma-4b-it`) or a folder: a relative value that
    exists as a folder relative to the config (or starts with `./`, `../` or `~`) is a path.
    """
    if value.startswith(("./", "../", "~")) or Path(value).is_absolute():
        return str(_resolve(base, value))
    candidate = base / value
    return str(candidate) if candidate.is_dir() else value


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)
