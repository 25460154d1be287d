"""What a run would cost, estimated before it starts (`medbatch validate` prints it).

Nothing is sent, loaded or submitted: the estimate reads the task's prompt, the model
profile and the runner's settings.

Example:
    >>> from medbatch import get_task
    >>> from medbatch.testing import FunctionRunner
    >>> runner = FunctionRunner(lambda request: "NORMAL", model_id="google/medgemma-4b-it")
    >>> plan = plan_run(get_task("ecg"), runner, 10)
    >>> plan.records, plan.image_tokens, plan.prompt_tokens_total > 10 * plan.image_tokens
    (10, 256, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from medbatch.profiles import ModelProfile, profile_for

if TYPE_CHECKING:
    from medbatch.records import GenerationParams
    from medbatch.runners.base import BatchRunner
    from medbatch.tasks.base import Task

__all__ = ["CHARS_PER_TOKEN", "RunPlan", "plan_run"]

#: Characters per token of English clinical prose for common tokenizers: good enough for a
#: budget estimate, and every figure built on it is printed as an estimate.
CHARS_PER_TOKEN = 4.0


@dataclass(frozen=True)
class RunPlan:
    """A run's size and token budget, estimated before it starts.

    Attributes:
        records: Records the run would send.
        runner: The back-end, as `"name · model_id"`.
        profile: Name of the model profile the run would use.
        text_tokens: Estimated prompt text tokens per record.
        image_tokens: Prompt tokens one image costs (from the profile; 0 when unknown).
        max_new_tokens: The generation limit per record.
        runner_plan: The runner's own rows (`BatchRunner.plan`: jobs, replicas, ...).
    """

    records: int
    runner: str
    profile: str
    text_tokens: int
    image_tokens: int
    max_new_tokens: int
    runner_plan: dict[str, str] = field(default_factory=dict)

    @property
    def prompt_tokens_total(self) -> int:
        """Estimated prompt tokens of the whole run (text and image)."""
        return self.records * (self.text_tokens + self.image_tokens)

    @property
    def max_new_tokens_total(self) -> int:
        """The most tokens the whole run may generate."""
        return self.records * self.max_new_tokens

    def rows(self) -> list[tuple[str, str]]:
        """(item, value) rows for display, in order, the runner's rows last."""
        return [
            ("records", str(self.records)),
            ("runner", self.runner),
            ("profile", self.profile),
            (
                "prompt tokens / image (text + image)",
                f"~{self.text_tokens} + {self.image_tokens}",
            ),
            ("prompt tokens total", f"~{self.prompt_tokens_total:,}"),
            ("max new tokens total", f"{self.max_new_tokens_total:,}"),
            *self.runner_plan.items(),
        ]


def plan_run(
    task: Task,
    runner: BatchRunner,
    n_records: int,
    *,
    constrained: bool = False,
    params: GenerationParams | None = None,
    profile: ModelProfile | None = None,
) -> RunPlan:
    """Estimate what running `n_records` of `task` on `runner` would involve.

    Args:
        task: The task (its prompt is measured).
        runner: The back-end; only its settings are read (`model_id`, `plan()`).
        n_records: Records the run would send.
        constrained: Measure the prompt of constrained decoding, as `classify` would send.
        params: Generation parameters; the task's when None.
        profile: Model profile; chosen from `runner.model_id` when None.

    Returns:
        The `RunPlan`.
    """
    profile = profile or profile_for(runner.model_id)
    prompt = task.for_constrained_decoding().prompt if constrained else task.prompt
    text = " ".join(str(value) for value in prompt.definition().values() if value)
    return RunPlan(
        records=n_records,
        runner=f"{runner.name} · {runner.model_id}",
        profile=profile.name,
        text_tokens=round(len(text) / CHARS_PER_TOKEN),
        image_tokens=profile.image_tokens or 0,
        max_new_tokens=(params or task.params).max_tokens,
        runner_plan=runner.plan(n_records),
    )
