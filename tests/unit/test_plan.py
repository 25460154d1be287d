"""`plan_run`: the run estimate `medbatch validate` prints, computed in the library."""

from __future__ import annotations

from medbatch.pipeline.plan import CHARS_PER_TOKEN, plan_run
from medbatch.profiles import profile_for
from medbatch.records import GenerationParams
from medbatch.tasks.registry import get_task
from medbatch.testing import FunctionRunner


class _JobRunner(FunctionRunner):
    def plan(self, n_records: int) -> dict[str, str]:
        return {"jobs": str(-(-n_records // 4))}


def _prompt_chars(constrained: bool) -> int:
    task = get_task("ecg")
    prompt = task.for_constrained_decoding().prompt if constrained else task.prompt
    return len(" ".join(str(v) for v in prompt.definition().values() if v))


def test_the_estimate_adds_text_and_image_tokens_per_record() -> None:
    runner = _JobRunner(lambda _: "NORMAL", model_id="google/medgemma-4b-it")
    plan = plan_run(get_task("ecg"), runner, 10, params=GenerationParams(max_tokens=32))
    image = profile_for("google/medgemma-4b-it").image_tokens
    assert image
    assert plan.image_tokens == image
    assert plan.text_tokens == round(_prompt_chars(False) / CHARS_PER_TOKEN) > 0
    assert plan.prompt_tokens_total == 10 * (plan.text_tokens + image)
    assert plan.max_new_tokens_total == 320
    rows = dict(plan.rows())
    assert rows["records"] == "10"
    assert rows["runner"] == f"{runner.name} · google/medgemma-4b-it"
    assert rows["prompt tokens total"] == f"~{plan.prompt_tokens_total:,}"
    assert rows["jobs"] == "3"  # the runner's own rows come last
    assert plan.rows()[-1] == ("jobs", "3")


def test_the_constrained_prompt_and_the_task_params_are_measured() -> None:
    task = get_task("ecg")
    runner = FunctionRunner(lambda _: "NORMAL", model_id="no-such-model")
    plain = plan_run(task, runner, 1)
    constrained = plan_run(task, runner, 1, constrained=True)
    assert _prompt_chars(True) != _prompt_chars(False)
    assert constrained.text_tokens == round(_prompt_chars(True) / CHARS_PER_TOKEN)
    assert plain.max_new_tokens == task.params.max_tokens
    assert plain.image_tokens == (profile_for("no-such-model").image_tokens or 0)
    assert plain.runner_plan == {}
