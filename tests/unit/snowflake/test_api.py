"""The run_batch call medbatch builds, bound against the real 1.27 and installed 2.x APIs.

`test_releases.py` checks every tested release; this file checks the seed notebook's call
and the parameter translation against the real signatures.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

pytest.importorskip("snowflake.ml.model")

from snowflake.ml.model._signatures import core

from medbatch.records import GenerationParams
from medbatch.snowflake import SnowflakeJobError, SnowflakeParamsError
from medbatch.snowflake.api import (
    JobOptions,
    SpecClasses,
    build_run_batch_kwargs,
    detect_api,
    plan_params,
)
from medbatch.testing.snowflake import (
    SnowflakeRelease,
    installed_run_batch_signature,
    openai_chat_signature,
)

SEED_OUTPUT = "@MEDGEMMA_DEMO.PUBLIC.ECG_BATCH_OUTPUT_STAGE/results/"
SEED_ENGINE_ARGS = ("--max-model-len=7048", "--gpu-memory-utilization=0.9")
SEED_PARAMS = GenerationParams(temperature=0.2, max_tokens=1024)
X = object()  # run_batch only passes X through; identity is what we check


@pytest.fixture
def release_127(
    get_release: Callable[[str], SnowflakeRelease],
) -> tuple[inspect.Signature, SpecClasses]:
    release = get_release("1.27.0")
    return release.signature, release.specs()


def _signature_with_max_tokens() -> core.ModelSignature:
    # A custom-logged model whose function declares `max_tokens`, as the seed's call assumes.
    stock = openai_chat_signature()
    return core.ModelSignature(
        inputs=stock.inputs,
        outputs=stock.outputs,
        params=[
            core.ParamSpec(name="temperature", dtype=core.DataType.DOUBLE, default_value=1.0),
            core.ParamSpec(name="max_tokens", dtype=core.DataType.INT64, default_value=250),
        ],
    )


def test_seed_call_is_what_medbatch_builds_under_127(
    release_127: tuple[inspect.Signature, SpecClasses],
) -> None:
    signature, specs = release_127
    seed_call = {
        "compute_pool": "MEDGEMMA_COMPUTE_POOL",
        "X": X,
        "input_spec": specs.InputSpec(params={"temperature": 0.2, "max_tokens": 1024}),
        "output_spec": specs.OutputSpec(stage_location=SEED_OUTPUT, mode=specs.SaveMode.OVERWRITE),
        "job_spec": specs.JobSpec(gpu_requests="1"),
        "inference_engine_options": {
            "engine": specs.InferenceEngine.VLLM,
            "engine_args_override": list(SEED_ENGINE_ARGS),
        },
    }
    plan = plan_params(SEED_PARAMS, _signature_with_max_tokens())
    options = JobOptions(
        compute_pool="MEDGEMMA_COMPUTE_POOL",
        output_location=SEED_OUTPUT,
        params=plan.params,
        engine_args=SEED_ENGINE_ARGS,
    )
    assert detect_api(signature) == "1.x"
    kwargs = build_run_batch_kwargs("1.x", X, options, specs)
    assert kwargs == seed_call
    signature.bind("mv", **kwargs)  # the real 1.27 parameters accept exactly this call


def test_stock_openai_signature_gets_max_completion_tokens(
    release_127: tuple[inspect.Signature, SpecClasses],
) -> None:
    from snowflake.ml.model._client.ops import param_utils

    stock = openai_chat_signature()
    with pytest.raises(Exception, match="max_tokens"):
        # The seed's params, against the stock signature: rejected by the SDK's own check.
        param_utils.validate_params({"temperature": 0.2, "max_tokens": 1024}, stock.params)
    plan = plan_params(SEED_PARAMS, stock)
    assert plan.params == {"temperature": 0.2, "max_completion_tokens": 1024}
    param_utils.validate_params(plan.params, stock.params)


def test_2x_equivalent_binds_to_installed_signature() -> None:
    signature = installed_run_batch_signature()
    assert detect_api(signature) == "2.x"
    specs = SpecClasses.installed()
    plan = plan_params(SEED_PARAMS, openai_chat_signature())
    options = JobOptions(
        compute_pool="MEDGEMMA_COMPUTE_POOL",
        output_location=SEED_OUTPUT,
        params=plan.params,
        engine_args=SEED_ENGINE_ARGS,
        job_name="MEDBATCH_X",
        replicas=2,
        num_workers=1,
        max_batch_rows=64,
    )
    kwargs = build_run_batch_kwargs("2.x", X, options, specs)
    signature.bind("mv", **kwargs)
    assert kwargs["input_spec"] == specs.InputSpec(params=plan.params)
    assert kwargs["output_spec"] == specs.OutputSpec(
        stage_location=SEED_OUTPUT, mode=specs.SaveMode.OVERWRITE
    )
    assert kwargs["resources_spec"] == specs.ResourcesSpec(gpu_requests="1")
    assert kwargs["inference_spec"] == specs.InferenceSpec(
        num_workers=1,
        max_batch_rows=64,
        engine_options=specs.EngineOptions(
            engine=specs.InferenceEngine.VLLM, engine_args_override=list(SEED_ENGINE_ARGS)
        ),
    )
    assert (kwargs["job_name"], kwargs["replicas"]) == ("MEDBATCH_X", 2)
    assert "job_spec" not in kwargs
    assert "inference_engine_options" not in kwargs
    with pytest.raises(ValueError, match="extra"):
        specs.InputSpec(params={}, job_name="x")  # 2.x specs forbid unknown fields


def test_unknown_run_batch_shape_is_refused() -> None:
    def run_batch(self: object, frame: object, *, compute_pool: str) -> None: ...

    with pytest.raises(SnowflakeJobError, match="unsupported"):
        detect_api(run_batch)


def test_missing_param_names_the_valid_ones() -> None:
    signature = core.ModelSignature(
        inputs=openai_chat_signature().inputs,
        outputs=openai_chat_signature().outputs,
        params=[core.ParamSpec(name="top_k", dtype=core.DataType.INT64, default_value=5)],
    )
    with pytest.raises(SnowflakeParamsError, match="valid parameters are: top_k"):
        plan_params(GenerationParams(), signature)


def test_signature_without_params_is_refused_before_any_job() -> None:
    # The stock no-params signature wants temperature, stop (an array), n, stream, the
    # penalties and a response_format object as typed input columns; the old "constant
    # columns" variant sent `stop` as JSON text and left the rest out.
    stock = openai_chat_signature(with_params=False)
    assert not stock.params
    wanted = {spec.name for spec in stock.inputs} - {"messages"}
    assert {"stop", "n", "stream", "frequency_penalty", "presence_penalty"} <= wanted
    with pytest.raises(SnowflakeParamsError, match="OPENAI_CHAT_WITH_PARAMS_SIGNATURE"):
        plan_params(GenerationParams(temperature=0.0, max_tokens=64, stop=("\n",)), stock)


def test_response_format_sent_when_declared() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": {}}}
    plan = plan_params(GenerationParams(), openai_chat_signature(), response_format=fmt)
    assert plan.params["response_format"] == fmt
    assert plan.constrained


def test_response_format_dropped_when_not_declared() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "label", "schema": {}}}
    plan = plan_params(GenerationParams(), _signature_with_max_tokens(), response_format=fmt)
    assert "response_format" not in plan.params
    assert not plan.constrained
