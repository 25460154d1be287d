"""The second half of the workflow on the public API, and what `classify` says up front."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from PIL import Image

import medbatch
from medbatch import GuardrailOptions, ListDataset, Record, classify, get_task
from medbatch.canary import CanaryFailedError
from medbatch.datasets.validation import check_labels
from medbatch.errors import DatasetError
from medbatch.profiles import GEMMA3, GENERIC
from medbatch.records import GenerationParams, ImageRef
from medbatch.runners import RunnerCapabilities
from medbatch.testing import FunctionRunner

TASK = get_task("ecg")


def _png(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (i % 256, 3, 5)).save(buffer, format="PNG")
    return buffer.getvalue()


def _dataset(n: int) -> ListDataset:
    labels = TASK.labels.names
    records = [
        Record(id=f"r{i:02d}", image=ImageRef.from_bytes(_png(i)), label=labels[i % len(labels)])
        for i in range(n)
    ]
    return ListDataset(records, labels=TASK.labels)


def _answer_truth(request: object) -> str:
    record_id = request.record_id  # type: ignore[attr-defined]
    return "FINAL CLASSIFICATION: " + TASK.labels.names[int(record_id[1:]) % 4]


def test_run_result_evaluates_and_reports(tmp_path: Path) -> None:
    result = classify(_dataset(8), TASK, FunctionRunner(_answer_truth), store=tmp_path / "run")
    evaluation = result.evaluate(n_bootstrap=0)
    assert evaluation.n == 8
    assert evaluation.n_parsed == 8
    diagonal = [row[i] for i, row in enumerate(evaluation.confusion.counts)]
    assert diagonal == [2, 2, 2, 2]
    assert evaluation == medbatch.evaluate(result.predictions, n_bootstrap=0)
    page = result.report(n_bootstrap=0)
    assert page == tmp_path / "run" / "report.html"
    assert page.is_file()


def test_a_run_in_memory_has_nothing_to_report() -> None:
    result = classify(_dataset(2), TASK, FunctionRunner(_answer_truth))
    with pytest.raises(ValueError, match="store=DIR"):
        result.report()


def test_the_workflow_is_exported_lazily_by_name() -> None:
    from medbatch.evaluation import compare, evaluate
    from medbatch.report import write_report
    from medbatch.runners.vllm import VLLMRunner

    assert medbatch.evaluate is evaluate
    assert medbatch.compare is compare
    assert medbatch.write_report is write_report
    assert medbatch.VLLMRunner is VLLMRunner
    for name in ("TransformersRunner", "OpenAICompatibleRunner", "SnowflakeBatchRunner"):
        assert name in medbatch.__all__


def test_moved_plumbing_still_resolves_with_a_warning_but_is_not_advertised() -> None:
    from medbatch.records import InferenceRequest
    from medbatch.runners.base import RunnerCapabilities as Caps

    with pytest.warns(DeprecationWarning, match=r"from medbatch\.records import InferenceRequest"):
        assert medbatch.InferenceRequest is InferenceRequest
    with pytest.warns(DeprecationWarning, match=r"from medbatch\.runners import RunnerCap"):
        assert medbatch.RunnerCapabilities is Caps
    # Every use warns, not only the first (the name is not cached on the module).
    with pytest.warns(DeprecationWarning, match="medbatch.InferenceRequest is deprecated"):
        from medbatch import InferenceRequest as Again
    assert Again is InferenceRequest
    assert "InferenceRequest" not in medbatch.__all__
    assert "InferenceRequest" not in dir(medbatch)


def test_guardrails_object_runs_the_canary() -> None:
    expensive = RunnerCapabilities(batching=True, expensive=True)
    runner = FunctionRunner(lambda r: "I am not sure.", capabilities=expensive)
    with pytest.raises(CanaryFailedError):
        classify(_dataset(80), TASK, runner, guardrails=GuardrailOptions(canary=4))
    assert runner.requests_count == 4  # the canary's size came from the object
    off = FunctionRunner(lambda r: "I am not sure.", capabilities=expensive)
    assert len(classify(_dataset(80), TASK, off, guardrails=GuardrailOptions(canary=0)).predictions)


def test_guardrails_and_the_old_arguments_are_not_mixed() -> None:
    runner = FunctionRunner(_answer_truth)
    with pytest.raises(TypeError, match="not both"):
        classify(_dataset(1), TASK, runner, guardrails=GuardrailOptions(), reprompt=True)


def test_a_constraint_the_runner_cannot_honour_is_announced_before_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = FunctionRunner(lambda r: "NORMAL")  # declares no constrained decoding
    with caplog.at_level(logging.WARNING, logger="medbatch.pipeline"):
        classify(_dataset(2), TASK, runner, constrained=True)
    before = [r.getMessage() for r in caplog.records]
    assert any("does not declare constrained decoding" in m for m in before)
    caplog.clear()
    able = FunctionRunner(
        lambda r: "NORMAL", capabilities=RunnerCapabilities(constrained_decoding=True)
    )
    with caplog.at_level(logging.WARNING, logger="medbatch.pipeline"):
        classify(_dataset(2), TASK, able, constrained=True)
    assert not any("constrained decoding" in r.getMessage() for r in caplog.records)


def test_label_scores_a_runner_cannot_give_are_not_promised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = GenerationParams(logprobs=True)
    with caplog.at_level(logging.WARNING, logger="medbatch.pipeline"):
        classify(_dataset(1), TASK, FunctionRunner(_answer_truth), params=params)
    assert any("cannot give label scores" in r.getMessage() for r in caplog.records)
    caplog.clear()
    scoring = FunctionRunner(_answer_truth, capabilities=RunnerCapabilities(label_scores=True))
    with caplog.at_level(logging.WARNING, logger="medbatch.pipeline"):
        classify(_dataset(1), TASK, scoring, params=params)
    assert not caplog.records


def test_prompt_adapts_to_a_profile_through_its_hook() -> None:
    prompt = TASK.prompt
    folded = prompt.for_profile(GEMMA3)
    assert folded is not prompt
    assert folded.fingerprint != prompt.fingerprint
    assert [m.role for m in folded.render(next(iter(_dataset(1))))] == ["user"]
    assert prompt.for_profile(GENERIC) is prompt
    assert folded.for_profile(GEMMA3) is folded  # already folded


def test_check_labels_refuses_no_records_and_unknown_truths() -> None:
    assert check_labels(_dataset(3), TASK.labels, task="ecg", where="cfg.toml") == 3
    with pytest.raises(DatasetError, match=r"cfg.toml: the dataset has no records"):
        check_labels([], TASK.labels, task="ecg", where="cfg.toml")
    odd = [Record(id="x", image=ImageRef.from_bytes(_png(1)), label="CAT")]
    with pytest.raises(DatasetError, match=r"labels not in task 'ecg': 'CAT' \(1 records\)"):
        check_labels(odd, TASK.labels, task="ecg", where="cfg.toml")


def test_every_runner_has_a_plan() -> None:
    assert FunctionRunner(_answer_truth).plan(10) == {}
