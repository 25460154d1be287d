"""`LabelConstraint(mode="score")`: classify by likelihood, without generating.

The transformers side (scores equal to brute force, no `generate` call, on 4 architectures)
is in `tests/unit/runners/test_transformers_architectures.py`; here: the API around it.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from medbatch import get_task
from medbatch.constraints import choice_json_schema, to_vllm_structured_outputs
from medbatch.datasets.sample import load_ecg_sample
from medbatch.datasets.synthetic import SyntheticECGDataset
from medbatch.errors import ConfigError
from medbatch.parsing.interpret import read_constrained_answer
from medbatch.pipeline import classify
from medbatch.records import LabelConstraint
from medbatch.runners.base import RunnerCapabilities
from medbatch.testing import FunctionRunner

SCORE = LabelConstraint(labels=("NORMAL", "POST_MI"), mode="score")


def test_task_builds_a_score_constraint() -> None:
    constraint = get_task("ecg").constraint(mode="score")
    assert constraint.mode == "score"
    assert not constraint.reasoning


def test_a_score_answer_is_one_label_name() -> None:
    assert read_constrained_answer(" POST_MI\n", SCORE) == "POST_MI"
    assert read_constrained_answer('{"label": "POST_MI"}', SCORE) is None
    assert read_constrained_answer("POST", SCORE) is None


@pytest.mark.parametrize("convert", [to_vllm_structured_outputs, choice_json_schema])
def test_score_mode_has_no_structured_output_form(convert: object) -> None:
    assert callable(convert)
    with pytest.raises(ValueError, match="mode='score'"):
        convert(SCORE)


def test_classify_refuses_score_mode_on_a_runner_without_exact_scores() -> None:
    dataset, _ = load_ecg_sample()
    task = get_task("ecg")
    # label_scores alone (approximate top-logprob scores, as OpenAI gives) is not enough.
    runner = FunctionRunner(
        keep_requests=True,
        fn=lambda request: "NORMAL",
        capabilities=RunnerCapabilities(label_scores=True),
    )
    with pytest.raises(ConfigError, match="cannot classify by likelihood"):
        classify(dataset, task, runner, constrained=task.constraint(mode="score"), canary=0)
    assert runner.requests_seen == []  # refused before any record ran


def test_classify_in_score_mode_with_transformers(tiny_model_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from medbatch.runners.transformers import TransformersRunner

    dataset = SyntheticECGDataset(4, seed=2, size=(220, 160))
    task = get_task("ecg")
    runner = TransformersRunner(tiny_model_path, batch_size=4, num_image_workers=1)
    result = classify(
        dataset, task, runner, constrained=task.constraint(mode="score"), canary=0, limit=4
    )
    assert len(result.predictions) == 4
    for row in result.predictions.itertuples():
        assert row.status == "parsed"
        assert row.completion_tokens == 0
        scores = json.loads(str(row.label_scores))  # the frame holds them as JSON text
        assert row.label == max(scores, key=scores.__getitem__)
        assert row.label in task.labels.names
    assert result.metrics["coverage"] == 1.0


def test_the_old_scoring_entry_point_warns_where_it_moved() -> None:
    pytest.importorskip("torch")
    from medbatch.runners import transformers as module

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = module.score_label_continuations
    assert callable(old)
    assert any(
        issubclass(w.category, DeprecationWarning) and "medbatch.scoring" in str(w.message)
        for w in caught
    )
    with pytest.raises(AttributeError):
        _ = module.no_such_name
