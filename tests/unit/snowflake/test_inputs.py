"""Inputs that used to break a whole Snowflake job, and what `plan()` warns about."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("snowflake.ml.model")

from medbatch.records import ChatMessage, ImagePart, ImageRef, InferenceRequest, TextPart
from medbatch.runners.snowflake import ENGINE_NONE_CAVEATS, SnowflakeBatchRunner
from medbatch.snowflake import SnowflakeIdentifierError
from medbatch.snowflake.stage import content_addressed_name
from medbatch.testing.snowflake import FakeSnowflake

SETTINGS: dict[str, Any] = {
    "database": "DB",
    "model": "MEDGEMMA",
    "version": "V1",
    "compute_pool": "POOL",
    "progress": False,
}


def _real_from_clause(output_location: str) -> str:
    """The `FROM` line snowflake-ml-python 2.x writes for an X frame and this output."""
    from snowflake.ml._internal.utils import sql_identifier
    from snowflake.ml.model._client.ops import service_ops
    from snowflake.ml.model._client.sql.service import build_execute_inference_job_service_sql
    from snowflake.ml.model.batch_inference import OutputSpec

    service_ops.validate_batch_inference_stage_locations(
        session=None,  # only read for an input_stage_location
        output_stage_location=output_location,
        input_stage_location=None,
    )
    output = service_ops.normalize_output_stage_location(OutputSpec(stage_location=output_location))
    from_source = f"{output.stage_location}_snowflake_temporary/0123abcd/"
    sql = build_execute_inference_job_service_sql(
        yaml_body="{}",
        compute_pool_name=sql_identifier.SqlIdentifier("POOL"),
        model_fqn="DB.PUBLIC.MEDGEMMA",
        version=None,
        function_name=None,
        job_fqn=None,
        async_=True,
        replicas=None,
        from_source=from_source,
    )
    return str(next(line for line in sql.splitlines() if line.startswith("FROM ")))


def test_output_path_with_a_space_is_refused_up_front() -> None:
    # The real 2.x client accepts the path and writes it unquoted into FROM: broken SQL,
    # after the input rows were already copied to the stage.
    assert len(_real_from_clause("@DB.PUBLIC.OUT/my results/").split()) == 3
    with pytest.raises(SnowflakeIdentifierError, match="output_path"):
        SnowflakeBatchRunner(**SETTINGS, output_path="my results")
    with pytest.raises(SnowflakeIdentifierError, match="output_path"):
        SnowflakeBatchRunner(**SETTINGS, output_path="run(1)")


def test_accepted_output_paths_make_one_from_token() -> None:
    runner = SnowflakeBatchRunner(**SETTINGS, output_path="medbatch/runs-2026.v1")
    location = runner.output_location.child("MEDBATCH_0123_ABCD").url
    assert len(_real_from_clause(location).split()) == 2


def test_an_odd_suffix_does_not_fail_the_job(tmp_path: Path) -> None:
    files = {"uni.jpé": b"\xff\xd8\xff\x01", "plain.jpg": b"\xff\xd8\xff\x02"}
    requests = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        image = ImageRef.from_path(tmp_path / name)
        message = ChatMessage(role="user", content=(TextPart(text="?"), ImagePart(image=image)))
        requests.append(InferenceRequest(record_id=name, messages=(message,)))
    fake = FakeSnowflake(answer=lambda m, p: "FINAL CLASSIFICATION: NORMAL")
    runner = SnowflakeBatchRunner(
        session=fake.session,
        model_version=fake.model_version,
        job_getter=fake.get_job,
        sleep=lambda s: None,
        **SETTINGS,
    )
    with runner:
        responses = {r.record_id: r for r in runner.run(requests)}
    assert all(r.ok for r in responses.values()), responses
    sent = fake.model_version.calls[0]["X"].to_pandas()["MESSAGES"].tolist()
    assert any("/uni-" in row and ".jp_" in row for row in sent)
    assert content_addressed_name(tmp_path / "uni.jpé").isascii()


def test_engine_none_plan_says_what_the_default_server_drops() -> None:
    from snowflake.ml.model._packager.model_handlers.huggingface import (
        _openai_chat_wrapper,
        _utils,
    )

    # The real wrapper of the installed release: response_format is not among the
    # generation settings it passes on, and image parts never reach the prompt.
    params = _utils._resolve_chat_params({}, {"temperature": 0.0, "response_format": {"x": 1}})
    assert "response_format" not in params
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Classify."},
                {"type": "image_url", "image_url": {"url": "@DB.PUBLIC.S/a.jpg"}},
            ],
        }
    ]
    owner = SimpleNamespace(tokenizer=SimpleNamespace(chat_template=None))
    prompt = _openai_chat_wrapper.HuggingFaceOpenAICompatibleModel._apply_chat_template(
        owner, messages
    )
    assert "Classify." in prompt
    assert "a.jpg" not in prompt
    assert "image" not in prompt

    default = SnowflakeBatchRunner(**SETTINGS, engine=None).plan(10)
    assert default.items() >= ENGINE_NONE_CAVEATS.items()
    vllm = SnowflakeBatchRunner(**SETTINGS).plan(10)
    assert not set(vllm) & set(ENGINE_NONE_CAVEATS)
