"""What `evaluate(run_dir)` reads is what the run directory holds (issue 15, items 1, 2, 6, 7).

The JSONL is the truth; the parquet table is a cache. A run killed or resumed at any point is
evaluated from the latest answer of every record it holds, marked incomplete when it is.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from medbatch import AnswerStatus, GenerationParams, ImageFolderDataset, classify, get_task
from medbatch.errors import RunStoreError
from medbatch.evaluation import evaluate
from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.report import write_report
from medbatch.runners import RunnerCapabilities
from medbatch.store import RunStore, load_predictions
from medbatch.testing import FunctionRunner

TASK = get_task("ecg")
ANSWER = {
    "NORMAL": "**FINAL CLASSIFICATION:** NORMAL",
    "POST_MI": "**FINAL CLASSIFICATION:** POST_MI",
}
FOLDERS = {"NORMAL": "normal_ecg_images", "POST_MI": "post_mi_history_ecg_images"}


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (seed % 256, seed // 256, 9)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_images(root: Path, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n):
        label = "NORMAL" if i % 2 == 0 else "POST_MI"
        folder = root / FOLDERS[label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img{i:03d}.png").write_bytes(_png(i))


def _dataset(root: Path) -> ImageFolderDataset:
    return ImageFolderDataset(root, TASK.folder_map, labels=TASK.labels)


def _oracle(request: InferenceRequest) -> str:
    return ANSWER["NORMAL" if request.record_id.startswith("normal") else "POST_MI"]


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    _write_images(root, 10)
    return root


class Killed(BaseException):
    """Escapes every handler but `finally`, like the end of a process."""


def _killing_after(n: int) -> FunctionRunner:
    answered: list[str] = []

    def fn(request: InferenceRequest) -> str:
        if len(answered) == n:
            raise Killed
        answered.append(request.record_id)
        return _oracle(request)

    runner = FunctionRunner(fn, batch_size=1)
    return runner


# -- item 1: the evaluated table is the latest answer of every stored record ---------------


def test_killed_retry_run_is_evaluated_from_the_answers_it_holds(
    images: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"

    def half_fail(request: InferenceRequest) -> str | InferenceResponse:
        if request.record_id.startswith("post"):
            return InferenceResponse.failure(request.record_id, "request_failed", "HTTP 503")
        return _oracle(request)

    first = classify(_dataset(images), TASK, FunctionRunner(half_fail), store=run)
    assert first.metrics["status_counts"]["error"] == 5
    assert evaluate(run, n_bootstrap=0).headline["accuracy"].value == 0.5

    with pytest.raises(Killed):
        classify(_dataset(images), TASK, _killing_after(3), store=run, retry_failed=True)

    stored = RunStore(run).latest()
    assert sum(not p.is_error for p in stored.values()) == 8  # 5 first + 3 retried
    evaluation = evaluate(run, n_bootstrap=0)
    assert evaluation.n == 10
    assert evaluation.headline["accuracy"].value == pytest.approx(0.8)
    assert evaluation.incomplete
    assert evaluation.run_status == "failed"
    assert "10 of 10 records" in (evaluation.completeness() or "")


def test_resume_on_a_subset_keeps_every_stored_record(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    again = classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run, limit=3)
    assert len(again.predictions) == 3  # the call's own rows
    evaluation = evaluate(run, n_bootstrap=0)
    assert evaluation.n == 10
    assert not evaluation.incomplete
    assert evaluation.n_expected == 10
    table = pd.read_parquet(run / "predictions.parquet")
    assert len(table) == 10  # the cache holds the directory, not the call


def test_parquet_is_read_only_while_fresh(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    cached = load_predictions(run)
    # A finished run: the cache gives exactly what the JSONL gives, row for row.
    rebuilt = RunStore(run).predictions_frame()
    pd.testing.assert_frame_equal(cached.reset_index(drop=True), rebuilt, check_dtype=False)
    evaluated = evaluate(run, n_bootstrap=200, seed=3).to_dict()
    (run / "predictions.parquet").rename(run / "moved.parquet")
    assert evaluate(run, n_bootstrap=200, seed=3).to_dict() == evaluated
    (run / "moved.parquet").rename(run / "predictions.parquet")

    # One more line in the JSONL (another process resumed and was killed): stale cache.
    latest = RunStore(run).latest()
    first_id = next(iter(latest))
    changed = latest[first_id].model_copy(
        update={"label": None, "status": AnswerStatus.UNPARSEABLE}
    )
    with RunStore(run) as store:
        store.append([changed])
    frame = load_predictions(run)
    row = frame.set_index("record_id").loc[first_id]
    assert row["status"] == "unparseable"
    assert len(frame) == 10


def test_run_directory_without_manifest_stamp_reads_the_jsonl(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["table"]["rows"] == 10
    del manifest["table"]  # a directory written before the stamp existed
    (run / "manifest.json").write_text(json.dumps(manifest))
    pd.DataFrame({"record_id": ["stale"]}).to_parquet(run / "predictions.parquet")
    assert sorted(load_predictions(run)["record_id"]) == sorted(RunStore(run).latest())


_KILL_SCRIPT = """
import os, signal, sys
import medbatch.pipeline.loop as pipeline_loop
from medbatch import ImageFolderDataset, classify, get_task
from medbatch.testing import FunctionRunner

pipeline_loop._FLUSH_EVERY = 1  # every answer durable at once, so the kill point is exact
task = get_task("ecg")
seen = []

def fn(request):
    if len(seen) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    seen.append(request.record_id)
    return "**FINAL CLASSIFICATION:** " + (
        "NORMAL" if request.record_id.startswith("normal") else "POST_MI")

dataset = ImageFolderDataset(sys.argv[1], task.folder_map, labels=task.labels)
classify(dataset, task, FunctionRunner(fn, batch_size=1), store=sys.argv[2])
"""


def _run_and_kill(images: Path, run: Path, after: int) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    script = textwrap.dedent(_KILL_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-c", script, str(images), str(run), str(after)],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode


def test_extended_run_killed_reports_n_of_m(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    _write_images(images, 10, start=10)  # the dataset grows from 10 to 20 images
    assert _run_and_kill(images, run, after=4) == -signal.SIGKILL

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "running"
    assert manifest["expected_records"] == 20
    evaluation = evaluate(run, n_bootstrap=0)
    assert evaluation.n == 14
    assert evaluation.incomplete
    assert (evaluation.n_stored, evaluation.n_expected) == (14, 20)
    assert "14 of 20 records" in (evaluation.completeness() or "")
    html = write_report(run, n_bootstrap=0).read_text()
    assert "This run is incomplete (status: running): 14 of 20 records" in html


def test_completed_run_has_no_banner(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    evaluation = evaluate(run, n_bootstrap=0)
    assert not evaluation.incomplete
    assert evaluation.completeness() is None
    assert "This run is incomplete" not in write_report(run, evaluation=evaluation).read_text()


# -- item 2: two runs are never mixed silently ---------------------------------------------


def test_another_model_is_refused_then_reruns_when_added(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle, model_id="model-a"), store=run)
    other = FunctionRunner(_oracle, model_id="model-b")
    with pytest.raises(RunStoreError, match=r"model 'model-a' → 'model-b'.*--add-to-run"):
        classify(_dataset(images), TASK, other, store=run)
    assert other.requests_count == 0
    lines = RunStore(run).predictions_path.read_text().count("\n")
    assert lines == 10  # nothing was appended by the refused call

    result = classify(_dataset(images), TASK, other, store=run, add_to_run=True)
    assert other.requests_count == 10  # the model id is part of the resume key
    assert result.skipped == 0
    manifest = RunStore(run).read_manifest()
    assert manifest is not None
    assert manifest.model_id == "model-b"
    assert [entry["model_id"] for entry in manifest.history] == ["model-a"]
    assert set(load_predictions(run)["model_id"]) == {"model-b"}


def test_changed_params_are_refused_then_rerun_when_added(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    hotter = GenerationParams(max_tokens=TASK.params.max_tokens, temperature=0.7)
    runner = FunctionRunner(_oracle)
    with pytest.raises(RunStoreError, match=r"generation params temperature 0\.0 → 0\.7"):
        classify(_dataset(images), TASK, runner, store=run, params=hotter)
    classify(_dataset(images), TASK, runner, store=run, params=hotter, add_to_run=True)
    assert runner.requests_count == 10


def test_another_dataset_folder_is_refused(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    elsewhere = tmp_path / "other-images"
    _write_images(elsewhere, 4)
    with pytest.raises(RunStoreError, match=r"dataset .*images' → .*other-images'"):
        classify(_dataset(elsewhere), TASK, FunctionRunner(_oracle), store=run)


def test_same_configuration_resumes_without_a_flag(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_oracle), store=run)
    _write_images(images, 2, start=10)  # more images in the same folder: an extension
    runner = FunctionRunner(_oracle)
    result = classify(_dataset(images), TASK, runner, store=run)
    assert runner.requests_count == 2
    assert result.skipped == 10


# -- item 6: reused counts each record once ------------------------------------------------

EXPENSIVE = RunnerCapabilities(batching=True, expensive=True)


def test_reused_counts_neither_canary_records_nor_twice(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    fresh = classify(
        _dataset(images),
        TASK,
        FunctionRunner(_oracle, capabilities=EXPENSIVE),
        store=run,
        canary=4,
    )
    assert fresh.skipped == 0
    assert fresh.manifest.counts["reused"] == 0
    assert fresh.manifest.counts["answered_now"] == 10

    resumed = classify(
        _dataset(images),
        TASK,
        FunctionRunner(_oracle, capabilities=EXPENSIVE),
        store=run,
        canary=4,
    )
    assert resumed.skipped == 10
    assert resumed.manifest.counts["reused"] == 10


# -- item 7: retry_failed honours RecordError.retryable ------------------------------------


def _failing(request: InferenceRequest) -> str | InferenceResponse:
    if request.record_id.endswith(("0.png", "1.png")):
        return InferenceResponse.failure(
            request.record_id, "request_failed", "HTTP 400: image too large", retryable=False
        )
    if request.record_id.endswith(("2.png", "3.png")):
        return InferenceResponse.failure(request.record_id, "request_failed", "HTTP 503")
    return _oracle(request)


def test_retry_failed_keeps_errors_that_are_not_retryable(images: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    classify(_dataset(images), TASK, FunctionRunner(_failing), store=run)
    runner = FunctionRunner(_oracle, keep_requests=True)
    result = classify(_dataset(images), TASK, runner, store=run, retry_failed=True)
    retried = sorted(request.record_id for request in runner.requests_seen)
    assert [rid[-10:] for rid in retried] == ["img002.png", "img003.png"]
    assert result.manifest.counts["kept_not_retryable"] == 2
    assert int(result.metrics["status_counts"]["error"]) == 2

    everything = FunctionRunner(_oracle, keep_requests=True)
    result = classify(_dataset(images), TASK, everything, store=run, retry_failed="all")
    assert sorted(r.record_id[-10:] for r in everything.requests_seen) == [
        "img000.png",
        "img001.png",
    ]
    assert int(result.metrics["status_counts"].get("error", 0)) == 0


# -- the command line ----------------------------------------------------------------------


def _cli_config(tmp_path: Path, images: Path, model_id: str) -> Path:
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(
            json.dumps({"record_id": record.id, "text": ANSWER[record.label or "NORMAL"]}) + "\n"
            for record in _dataset(images)
        )
    )
    config = tmp_path / f"{model_id}.toml"
    config.write_text(
        f'output_dir = "{tmp_path / "out"}"\n[task]\nname = "ecg"\n'
        f'[dataset]\nkind = "folder"\nroot = "{images}"\n'
        f'[runner]\nkind = "replay"\npath = "{answers}"\nmodel_id = "{model_id}"\n'
    )
    return config


def test_cli_refuses_another_model_and_adds_with_the_flag(images: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medbatch.cli import app

    cli = CliRunner()
    first = cli.invoke(app, ["run", str(_cli_config(tmp_path, images, "a")), "--no-progress"])
    assert first.exit_code == 0, first.output
    other = str(_cli_config(tmp_path, images, "b"))
    refused = cli.invoke(app, ["run", other, "--no-progress"])
    assert refused.exit_code == 1
    message = " ".join(refused.output.split())
    assert "model 'a' → 'b'" in message
    assert "--add-to-run" in message
    added = cli.invoke(app, ["run", other, "--no-progress", "--add-to-run"])
    assert added.exit_code == 0, added.output
    assert set(load_predictions(tmp_path / "out")["model_id"]) == {"b"}


def test_cli_evaluate_warns_about_an_incomplete_run(images: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medbatch.cli import app

    run = tmp_path / "run"
    with pytest.raises(Killed):
        classify(_dataset(images), TASK, _killing_after(4), store=run)
    out = CliRunner().invoke(app, ["evaluate", str(run), "--bootstrap", "0"])
    assert out.exit_code == 0, out.output
    assert "This run is incomplete (status: failed): 4 of 10 records" in " ".join(
        out.output.split()
    )


def test_cli_retry_all_failed_reruns_errors_that_are_not_retryable(
    images: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from medbatch.cli import app

    config = _cli_config(tmp_path, images, "a")
    answers = tmp_path / "answers.jsonl"
    recorded = answers.read_text()
    answers.write_text("")  # no recording: every record is a missing_recording error
    cli = CliRunner()
    assert cli.invoke(app, ["run", str(config), "--no-progress"]).exit_code == 1
    answers.write_text(recorded)
    kept = cli.invoke(app, ["run", str(config), "--no-progress", "--retry-failed"])
    assert kept.exit_code == 1  # not retryable: kept, still all errors
    manifest = RunStore(tmp_path / "out").read_manifest()
    assert manifest is not None
    assert manifest.counts["kept_not_retryable"] == 10
    rerun = cli.invoke(app, ["run", str(config), "--no-progress", "--retry-all-failed"])
    assert rerun.exit_code == 0, rerun.output
    assert set(load_predictions(tmp_path / "out")["status"]) == {"parsed"}
