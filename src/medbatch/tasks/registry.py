"""Task registry: built-in tasks and those third-party packages register by entry point.

A package adds a task under the entry-point group `medbatch.tasks`:

```toml
[project.entry-points."medbatch.tasks"]
chest-xray = "my_package.tasks:CHEST_XRAY_TASK"
```

The target may be a `Task` or a zero-argument callable returning one.
"""

from __future__ import annotations

from typing import Any

from medbatch.errors import ConfigError
from medbatch.registry import Registry
from medbatch.tasks.base import Task

__all__ = ["TASKS", "get_task", "list_tasks", "register_task"]

TASKS: Registry[Any] = Registry(
    "task", {"ecg": "medbatch.tasks.ecg:make_ecg_task"}, group="medbatch.tasks"
)


def get_task(name: str, *, prompt: str | None = None) -> Task:
    """The task registered as `name`, optionally with another prompt version selected.

    A name ending in `.toml` is read as a task file (see `medbatch.tasks.config`).

    Raises:
        UnknownNameError: No task of that name (the message lists the known ones).
        ConfigError: A task file is missing or invalid (the key is named).
    """
    if name.endswith(".toml"):
        from medbatch.tasks.config import load_task_file

        file_task = load_task_file(name)
        return file_task.with_prompt(prompt) if prompt else file_task
    target = TASKS.get(name)
    task = target() if callable(target) and not isinstance(target, Task) else target
    if not isinstance(task, Task):
        raise ConfigError(f"task entry {name!r} is not a medbatch Task: {type(task).__name__}")
    return task.with_prompt(prompt) if prompt else task


def list_tasks() -> list[str]:
    """Names of every registered task."""
    return TASKS.names()


def register_task(task: Task, *, name: str | None = None) -> None:
    """Register a task object in this process (entry points do it for installed packages)."""
    TASKS.register(name or task.name, task)
