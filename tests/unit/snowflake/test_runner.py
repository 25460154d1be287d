"""SnowflakeBatchRunner job lifecycle against the shipped fake (real specs, local testing)."""

from __future__ import annotations

import logging
import subprocess
import sys
from itertools import count
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("snowflake.ml.model")

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
from medbatch.testing.snowflake import (
    FakeSnowflake,
    load_release_from_wheel,
    sf127_wheel,
)

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
    return SnowflakeBatchRunner(
        session=fake.session,
        model_version=fake.model_version,
        job_getter=fake.get_job,
        specs=fake.model_version.specs,
        sleep=lambda s: None,
        **{**SETTINGS, **extra},
    )


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


def test_runner_under_127_uses_job_spec(tmp_path: Path) -> None:
    wheel = sf127_wheel()
    if wheel is None:
        pytest.skip("run scripts/fetch_sf127.sh to fetch snowflake-ml-python 1.27.0")
    signature, specs = load_release_from_wheel(wheel)
    fake = FakeSnowflake(answer=_answer, run_batch_signature=signature, specs=specs)
    with _runner(fake, replicas=2) as runner:
        responses = list(runner.run(_requests(tmp_path)))
    assert all(r.ok for r in responses)
    call = fake.model_version.calls[0]
    assert call["job_spec"].replicas == 2
    assert call["job_spec"].gpu_requests == "1"
    assert call["input_spec"].params == {"temperature": 0.0, "max_completion_tokens": 1024}


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
