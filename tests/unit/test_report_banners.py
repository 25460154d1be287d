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


def _sample_run(tmp_path: Path) -> Path:
    dataset, runner = load_ecg_sample()
    classify(dataset, get_task("ecg"), runner, store=tmp_path / "run", progress=False)
    return tmp_path / "run"


def test_an_incomplete_run_says_so(tmp_path: Path) -> None:
    from medbatch.store import RunStore

    run = _sample_run(tmp_path)
    complete = write_report(run, n_bootstrap=20).read_text("utf-8")
    assert "This run is incomplete" not in complete
    store = RunStore(run)
    manifest = store.read_manifest()
    assert manifest is not None
    manifest.status = "interrupted"
    store.open()
    store.write_manifest(manifest)
    store.close()
    page = write_report(run, n_bootstrap=20).read_text("utf-8")
    assert "This run is incomplete" in page
    assert "(status: interrupted)" in page


def test_report_polish(tmp_path: Path) -> None:
    page = write_report(_sample_run(tmp_path), n_bootstrap=20).read_text("utf-8")
    assert "Run directory <code>run</code>" in page
    guardrails = page.split("<h2>Guardrails</h2>")[1].split("<h2>")[0]
    # The three checks the section promises each have a row, run or not.
    for check in ("constraint validity", "images seen by the model", "canary"):
        assert f"<td>{check}</td>" in guardrails
    manifest = page.split("<h2>Run manifest</h2>")[1]
    runner_row = manifest.split("<dt>runner</dt>")[1].split("</dd>")[0]
    assert "{" not in runner_row  # readable facts, not a JSON dict
    assert "<code>replay</code>" in runner_row
