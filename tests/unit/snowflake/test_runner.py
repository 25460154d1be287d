"""SnowflakeBatchRunner job lifecycle against the shipped fake (real specs, local testing)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from itertools import count
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("snowflake.ml.model")

from medbatch import ListDataset, Record, classify, get_task
from medbatch.parsing.interpret import interpret_response
from medbatch.records import (
    ChatMessage,
    ImagePart,
    ImageRef,
    InferenceRequest,
    TextPart,
)
from medbatch.runners.snowflake import SnowflakeBatchRunner
from medbatch.snowflake import SnowflakeResultsError
from medbatch.snowflake.results import is_result_file
from medbatch.testing.snowflake import FakeSnowflake, SnowflakeRelease

SETTINGS: dict[str, Any] = {
    "database": "DB",
    "model": "MEDGEMMA",
    "version": "V1",
    "compute_pool": "POOL",
    "progress": False,
    "poll_interval_s": 1.0,
}


def _answer(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    url = messages[-1]["content"][1]["image_url"]["url"]
    return f"FINAL CLASSIFICATION: {'POST_MI' if 'mi' in url else 'NORMAL'}"


def _requests(tmp_path: Path, n: int = 6) -> list[InferenceRequest]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    requests = []
    for i in range(n):
        if i % 3 == 0:
            image = ImageRef.from_stage(f"@DB.PUBLIC.ECG/mi/{i}.jpg")
        elif i % 3 == 1:
            path = tmp_path / f"{i}.jpg"
            path.write_bytes(b"\xff\xd8\xff" + bytes([i]))
            image = ImageRef.from_path(path)
        else:
            image = ImageRef.from_bytes(b"\x89PNG" + bytes([i]))
        message = ChatMessage(
            role="user", content=(TextPart(text="Classify."), ImagePart(image=image))
        )
        requests.append(InferenceRequest(record_id=f"r{i}", messages=(message,)))
    return requests


def _runner(fake: FakeSnowflake, **extra: Any) -> SnowflakeBatchRunner:
    options: dict[str, Any] = {
        "session": fake.session,
        "model_version": fake.model_version,
        "job_getter": fake.get_job,
        "specs": fake.model_version.specs,
        "sleep": lambda s: None,
        **SETTINGS,
    }
    return SnowflakeBatchRunner(**{**options, **extra})


@pytest.mark.parametrize("nested", [False, True])
def test_run_joins_answers_on_record_ids(tmp_path: Path, nested: bool) -> None:
    fake = FakeSnowflake(answer=_answer, nested_output=nested)
    with _runner(fake) as runner:
        responses = {r.record_id: r for r in runner.run(_requests(tmp_path))}
    assert set(responses) == {f"r{i}" for i in range(6)}
    assert all(r.ok for r in responses.values())
    assert responses["r0"].text == "FINAL CLASSIFICATION: POST_MI"
    assert responses["r1"].usage is not None
    assert responses["r1"].finish_reason == "stop"
    assert fake.run_batch_calls == 1
    assert fake.session.calls["put"] == 1
    sent = fake.model_version.calls[0]["X"].to_pandas()
    assert list(sent.columns) == ["MEDBATCH_RECORD_ID", "MESSAGES"]
    assert '"url": "@DB.PUBLIC.MEDBATCH_IMAGES/images/1-' in sent.iloc[1]["MESSAGES"]
    assert '"url": "data:image/png;base64,' in sent.iloc[2]["MESSAGES"]


def test_runner_end_to_end_under_each_release(tmp_path: Path, release: SnowflakeRelease) -> None:
    # The specs are what medbatch picks for the release; the fake checks them against the
    # release's own run_batch annotations and binds the call to its real signature.
    fake = FakeSnowflake(answer=_answer, **release.fake_options())
    runner = _runner(fake, replicas=2, specs=release.specs())
    with runner:
        responses = list(runner.run(_requests(tmp_path)))
    assert all(r.ok for r in responses)
    assert len(responses) == 6
    call = fake.model_version.calls[0]
    params = {"temperature": 0.0, "max_completion_tokens": 1024}
    assert call["input_spec"].params == params
    if release.api == "1.x":
        assert (call["job_spec"].replicas, call["job_spec"].gpu_requests) == (2, "1")
    else:
        assert (call["replicas"], call["resources_spec"].gpu_requests) == (2, "1")


def test_interrupted_wait_reattaches_to_the_same_job(tmp_path: Path) -> None:
    fake = FakeSnowflake(
        answer=_answer, statuses=["PENDING", ConnectionError("network dropped"), "RUNNING", "DONE"]
    )
    saved: list[dict[str, Any]] = []
    first = _runner(fake)
    first.state_listener = saved.append
    with first:
        lost = list(first.run(_requests(tmp_path)))
    assert all(r.error is not None and "re-attach" in r.error.message for r in lost)
    state = saved[-1]
    (job,) = state["jobs"].values()
    assert job["job_id"]
    assert saved[0]["jobs"]
    assert fake.run_batch_calls == 1

    second = _runner(fake)
    second.restore(state)
    with second:
        responses = list(second.run(_requests(tmp_path)))
    assert all(r.ok for r in responses)
    assert len(responses) == 6
    assert fake.run_batch_calls == 1  # no second job was paid for
    assert fake.reattached == [job["job_id"]]


def test_failed_job_surfaces_log_tail_and_fails_every_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = "\n".join(
        [*(f"line {i}" for i in range(100)), "torch.OutOfMemoryError: CUDA out of memory"]
    )
    fake = FakeSnowflake(answer=_answer, statuses=["PENDING", "RUNNING", "FAILED"], logs=logs)
    with _runner(fake, log_tail_lines=5) as runner:
        responses = list(runner.run(_requests(tmp_path)))
    assert len(responses) == 6
    for response in responses:
        assert response.error is not None
        assert response.error.kind == "job_failed"
        assert "CUDA out of memory" in response.error.message
        assert "line 10\n" not in response.error.message
    assert "CUDA out of memory" in caplog.text


def test_ctrl_c_cancels_the_job(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_answer, statuses=["PENDING", "RUNNING"])

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    runner = SnowflakeBatchRunner(
        session=fake.session, model_version=fake.model_version, sleep=interrupt, **SETTINGS
    )
    with pytest.raises(KeyboardInterrupt), runner:
        list(runner.run(_requests(tmp_path)))
    (job,) = fake.model_version.jobs.values()
    assert job.cancelled
    assert next(iter(runner.state()["jobs"].values()))["status"] == "CANCELLED"


def test_timeout_cancels_and_marks_records(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_answer, statuses=["PENDING", "RUNNING"])
    ticks = count(step=100)
    runner = SnowflakeBatchRunner(
        session=fake.session,
        model_version=fake.model_version,
        sleep=lambda s: None,
        clock=lambda: float(next(ticks)),
        timeout_s=250,
        **SETTINGS,
    )
    with runner:
        responses = list(runner.run(_requests(tmp_path)))
    assert {r.error.kind for r in responses if r.error} == {"timeout"}
    assert next(iter(fake.model_version.jobs.values())).cancelled


def test_lost_rows_become_per_record_errors(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=lambda m, p: None if "data:" in str(m) else "NORMAL")
    with _runner(fake) as runner:
        responses = {r.record_id: r for r in runner.run(_requests(tmp_path))}
    missing = {k for k, r in responses.items() if r.error is not None}
    assert missing == {"r2", "r5"}
    assert all(responses[k].error.kind == "missing_response" for k in missing)  # type: ignore[union-attr]


def test_missing_id_column_fails_loudly(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_answer, omit_id_column=True)
    runner = _runner(fake)
    with runner, pytest.raises(SnowflakeResultsError, match="MEDBATCH_RECORD_ID"):
        list(runner._run_batch(_requests(tmp_path)))


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("data_0_0_0.parquet", True),
        ("_temporary/in.parquet", False),
        ("_snowflake_temporary/ab/in.parquet", False),
        ("_SUCCESS", False),
        ("job.log", False),
        ("JOB/x.PARQUET", True),
    ],
)
def test_result_file_filter(path: str, kept: bool) -> None:
    assert is_result_file(path) is kept


def test_import_does_not_load_snowflake() -> None:
    # Only submodules count: snowpark's `-nspkg.pth` creates the bare `snowflake` namespace
    # module at interpreter start-up, before any import of ours.
    code = (
        "import sys, medbatch, medbatch.runners.snowflake, medbatch.datasets.stage;"
        "bad=[m for m in sys.modules if m.startswith('snowflake.')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_state_is_persisted_before_the_job_is_waited_on(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_answer)
    seen: list[str] = []
    runner = _runner(fake)
    runner.state_listener = lambda s: seen.extend(j["status"] for j in s["jobs"].values())
    with runner:
        list(runner.run(_requests(tmp_path)))
    assert seen[:2] == ["SUBMITTING", "PENDING"]
    assert seen[-1] == "DONE"
    assert logging.getLogger("medbatch").level in (
        logging.NOTSET,
        logging.DEBUG,
        logging.INFO,
        logging.WARNING,
    )


# -- item: constrained decoding over response_format -----------------------------------------

TASK = get_task("ecg")


def _image_url(messages: list[dict[str, Any]]) -> str:
    for message in messages:
        for part in message["content"] if isinstance(message["content"], list) else ():
            if part.get("type") == "image_url":
                return str(part["image_url"]["url"])
    return ""  # the canary's text-only twin


def _free_answer(messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    # A model that ignores the "label only" instruction and reasons first.
    label = "POST_MI" if "/mi_" in _image_url(messages) else "NORMAL"
    return f"The rhythm is regular.\n\nFINAL CLASSIFICATION: {label}"


def _records(tmp_path: Path, n: int = 12) -> ListDataset:
    records = []
    for i in range(n):
        kind = "mi" if i % 2 else "normal"
        path = tmp_path / f"{kind}_{i}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([i]) * 16)
        label = "POST_MI" if kind == "mi" else "NORMAL"
        records.append(Record(id=f"r{i}", image=ImageRef.from_path(path), label=label))
    return ListDataset(records, labels=TASK.labels)


def test_honoured_choice_constraint_reads_as_the_bare_label(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_free_answer, structured_outputs="honour")
    with _runner(fake) as runner:
        result = classify(_records(tmp_path), TASK, runner, constrained=True, canary=4)
    frame = result.predictions
    assert len(frame) == 12
    assert set(frame["method"]) == {"constrained"}
    assert result.constraint_ignored == 0
    assert (frame["label"] == frame["truth"]).all()
    # What the server got and answered: the label enum as a JSON schema, and JSON back.
    sent = fake.model_version.calls[0]["input_spec"].params["response_format"]
    schema = sent["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == list(TASK.labels.names)
    assert schema["required"] == ["label"]


def test_runner_unwraps_the_json_and_keeps_it(tmp_path: Path) -> None:
    constraint = TASK.constraint()
    requests = [r.model_copy(update={"constraint": constraint}) for r in _requests(tmp_path)]
    fake = FakeSnowflake(answer=_answer, structured_outputs="honour")
    with _runner(fake) as runner:
        responses = {r.record_id: r for r in runner.run(requests)}
    assert responses["r0"].text == "POST_MI"
    assert json.loads(responses["r0"].metadata["raw_text"]) == {"label": "POST_MI"}
    parsed, ignored = interpret_response(responses["r0"], TASK.parser, constraint)
    assert (parsed.label, parsed.method, ignored) == ("POST_MI", "constrained", False)


def test_ignored_constraint_is_still_flagged(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_free_answer, structured_outputs="ignore")
    with _runner(fake) as runner:
        result = classify(_records(tmp_path), TASK, runner, constrained=True, canary=0)
    assert result.constraint_ignored == 12
    assert all(method.startswith("fallback:") for method in result.predictions["method"])


# -- item: one output base per job ---------------------------------------------------------


def test_a_new_job_never_removes_another_runs_results(
    tmp_path: Path, release: SnowflakeRelease
) -> None:
    from snowflake.ml.model._client.ops.service_ops import _normalize_stage_location

    fake = FakeSnowflake(answer=_answer, **release.fake_options())
    first = _runner(fake, specs=release.specs())
    with first:
        assert all(r.ok for r in first.run(_requests(tmp_path / "a", 3)))
    (entry,) = first.state()["jobs"].values()
    kept = fake.session.stage_files(entry["results"])
    assert any(path.endswith(".parquet") for path, _, _ in kept)
    # Another run (or a detached job waiting to be re-attached) on the same output stage.
    second = _runner(fake, specs=release.specs())
    with second:
        assert all(r.ok for r in second.run(_requests(tmp_path / "b", 4)))
    assert fake.session.stage_files(entry["results"]) == kept
    bases = [call["output_spec"].stage_location for call in fake.model_version.calls]
    # The comparison the real 2.6 client makes for "inside the output location".
    a, b = (_normalize_stage_location(base, None, None)[3] for base in bases)
    assert not a.startswith(b)
    assert not b.startswith(a)


# -- item: never two jobs for one run ---------------------------------------------------------


def _interrupted_submission(
    tmp_path: Path, fake: FakeSnowflake
) -> tuple[dict[str, Any], list[InferenceRequest]]:
    requests = _requests(tmp_path)
    saved: list[dict[str, Any]] = []
    runner = _runner(fake)
    runner.state_listener = saved.append
    with pytest.raises(KeyboardInterrupt), runner:
        list(runner.run(requests))
    (entry,) = saved[-1]["jobs"].values()
    assert (entry["job_id"], entry["status"]) == (None, "SUBMITTING")
    return saved[-1], requests


def test_resume_finds_a_job_created_while_run_batch_blocked(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_answer, interrupt="after")
    state, requests = _interrupted_submission(tmp_path, fake)
    second = _runner(fake)
    second.restore(state)
    with second:
        responses = list(second.run(requests))
    assert all(r.ok for r in responses)
    assert len(responses) == 6
    assert fake.jobs_created == 1
    assert fake.run_batch_calls == 1  # looked up by name, not submitted again
    (name,) = (entry["job_name"] for entry in state["jobs"].values())
    assert fake.lookups == [f"DB.PUBLIC.{name}"]


def test_resume_submits_under_the_same_name_when_no_job_exists(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_answer, interrupt="before")
    state, requests = _interrupted_submission(tmp_path, fake)
    second = _runner(fake)
    second.restore(state)
    with second:
        responses = list(second.run(requests))
    assert all(r.ok for r in responses)
    (entry,) = state["jobs"].values()
    assert fake.jobs_created == 1
    assert list(fake.model_version.jobs) == [f"DB.PUBLIC.{entry['job_name']}"]


def test_a_job_appearing_after_the_lookup_is_attached_not_duplicated(tmp_path: Path) -> None:
    from snowflake.snowpark.exceptions import SnowparkSQLException

    fake = FakeSnowflake(answer=_answer, interrupt="after")
    state, requests = _interrupted_submission(tmp_path, fake)
    lookups = count()

    def late_getter(job_id: str, session: Any) -> Any:
        # The first lookup misses (the server had not created the job yet).
        if next(lookups) == 0:
            raise SnowparkSQLException(f"Job {job_id} does not exist", sql_error_code=2003)
        return fake.get_job(job_id, session)

    second = _runner(fake, job_getter=late_getter)
    second.restore(state)
    with second:
        responses = list(second.run(requests))
    assert all(r.ok for r in responses)
    assert fake.jobs_created == 1
    assert fake.run_batch_calls == 2  # the second submission was refused by name


def test_an_unanswered_lookup_submits_nothing(tmp_path: Path) -> None:
    fake = FakeSnowflake(answer=_answer, interrupt="after")
    state, requests = _interrupted_submission(tmp_path, fake)

    def broken_getter(job_id: str, session: Any) -> Any:
        raise ConnectionError("network unreachable")

    second = _runner(fake, job_getter=broken_getter)
    second.restore(state)
    with second:
        responses = list(second.run(requests))
    assert {r.error.kind for r in responses if r.error} == {"runner_error"}
    assert all(r.error and "not submitting a second job" in r.error.message for r in responses)
    assert fake.run_batch_calls == 1
