"""Tasks: label set + prompts + parser + dataset layout, by name."""

from medbatch.tasks.base import Task
from medbatch.tasks.registry import get_task, list_tasks, register_task

__all__ = ["Task", "get_task", "list_tasks", "register_task"]
