"""Back-ends that run inference. Heavy ones (transformers, vllm, snowflake, ray) load lazily."""

from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig
from medbatch.runners.replay import ReplayRunner

__all__ = ["BatchRunner", "ReplayRunner", "RunnerCapabilities", "RunnerConfig"]
