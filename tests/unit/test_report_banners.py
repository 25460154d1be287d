"""Reports say when their answers mean nothing about a real model."""

from __future__ import annotations

from pathlib import Path

from medbatch.datasets.sample import ILLUSTRATIVE_MODEL_ID, load_ecg_sample
from medbatch.pipeline import classify
from medbatch.report import write_report
from medbatch.tasks.registry import get_task

BANNER = "These answers are illustrative, not model output."


def test_the_bundled_sample_is_named_and_reported_as_illustrative(tmp_path: Path) -> None:
    dataset, runner = load_ecg_sample()
    assert runner.model_id == ILLUSTRATIVE_MODEL_ID
    assert "medgemma-4b-it" not in runner.model_id
    classify(dataset, get_task("ecg"), runner, store=tmp_path / "run", progress=False)
    page = write_report(tmp_path / "run", n_bootstrap=20).read_text("utf-8")
    assert BANNER in page
    assert "tiny random-weight test model" not in page


def test_a_real_looking_replay_has_no_illustrative_banner(tmp_path: Path) -> None:
    dataset, sample = load_ecg_sample()
    from medbatch.runners.replay import ReplayRunner

    runner = ReplayRunner(list(sample._responses.values()), model_id="my-model")
    classify(dataset, get_task("ecg"), runner, store=tmp_path / "run", progress=False)
    page = write_report(tmp_path / "run", n_bootstrap=20).read_text("utf-8")
    assert BANNER not in page
