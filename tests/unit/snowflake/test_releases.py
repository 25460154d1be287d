"""Argument building against the real classes and `run_batch` of every tested release.

1.27, 1.47 and 1.54 come from their wheels, the installed 2.x is imported, 2.0 from its
wheel. The spec classes each argument must be an instance of are read from the release's
own `run_batch` annotations, not from medbatch's choice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

pytest.importorskip("snowflake.ml.model")

from medbatch.snowflake import SnowflakeJobError
from medbatch.snowflake.api import JobOptions, SpecClasses, build_run_batch_kwargs
from medbatch.testing.snowflake import SnowflakeRelease as Release

X = object()  # run_batch passes X through; identity is what we check

EVERY_OPTION = JobOptions(
    compute_pool="POOL",
    output_location="@DB.PUBLIC.OUT/results/MEDBATCH_A/",
    params={"temperature": 0.0, "max_completion_tokens": 64},
    job_name="DB.PUBLIC.MEDBATCH_A",
    function_name="__CALL__",
    gpu_requests="1",
    cpu_requests="4",
    memory_requests="16Gi",
    replicas=2,
    num_workers=1,
    max_batch_rows=64,
    warehouse="WH",
    engine="vllm",
    engine_args=("--max-model-len=8192",),
    image_repo="DB.PUBLIC.REPO",
    force_rebuild=True,
)


def test_detected_api_per_release(release: Release) -> None:
    expected = "1.x" if release.name.startswith("1.") else "2.x"
    assert release.api == expected


def test_every_option_binds_with_the_annotated_classes(release: Release) -> None:
    kwargs = build_run_batch_kwargs(release.api, X, EVERY_OPTION, release.specs())
    release.signature.bind("mv", **kwargs)  # the release's real parameters accept the call
    annotated = release.annotated()
    spec_arguments = {k: v for k, v in kwargs.items() if k.endswith("_spec")}
    assert set(spec_arguments) <= set(annotated)
    for name, value in spec_arguments.items():
        assert isinstance(value, annotated[name]), (name, type(value), annotated[name])
    assert kwargs["X"] is X


def test_job_fields_reach_the_release(release: Release) -> None:
    kwargs = build_run_batch_kwargs(release.api, X, EVERY_OPTION, release.specs())
    specs = release.specs()
    assert kwargs["input_spec"].params == EVERY_OPTION.params
    assert kwargs["output_spec"].stage_location == EVERY_OPTION.output_location
    assert kwargs["output_spec"].mode == specs.SaveMode.OVERWRITE
    if release.api == "1.x":
        job: Any = kwargs["job_spec"]
        assert (job.job_name, job.replicas, job.gpu_requests) == ("DB.PUBLIC.MEDBATCH_A", 2, "1")
        assert (job.num_workers, job.max_batch_rows, job.warehouse) == (1, 64, "WH")
        assert (job.image_repo, job.force_rebuild) == ("DB.PUBLIC.REPO", True)
        engine = kwargs["inference_engine_options"]
        assert engine["engine"] == specs.InferenceEngine.VLLM
        assert engine["engine_args_override"] == ["--max-model-len=8192"]
    else:
        assert (kwargs["job_name"], kwargs["replicas"]) == ("DB.PUBLIC.MEDBATCH_A", 2)
        assert kwargs["resources_spec"].memory_requests == "16Gi"
        inference = kwargs["inference_spec"]
        assert inference.engine_options.engine == specs.InferenceEngine.VLLM
        assert kwargs["image_build_spec"].force_rebuild is True


@pytest.mark.parametrize(
    ("name", "module", "missing"),
    [
        # What the issue reports, checked against the real public modules.
        ("1.47.0", "snowflake.ml.model", "InputSpec"),
        ("1.54.0", "snowflake.ml.model", "InputSpec"),
        ("1.54.0", "snowflake.ml.model.batch_inference", "JobSpec"),
    ],
)
def test_spec_module_is_chosen_by_api_not_by_presence(
    get_release: Callable[[str], Release], name: str, module: str, missing: str
) -> None:
    release = get_release(name)
    with pytest.raises(AttributeError):
        getattr(release.import_module(module), missing)
    specs = release.specs()
    assert specs.JobSpec is not None
    assert specs.JobSpec is release.annotated()["job_spec"]


def test_2x_module_under_a_1x_run_batch_is_refused_clearly(
    get_release: Callable[[str], Release],
) -> None:
    # 1.54's `batch_inference` holds the 2.x classes (no JobSpec) while run_batch takes
    # job_spec=: building a 1.x call from them fails with our message, not
    # "'NoneType' object is not callable".
    release = get_release("1.54.0")
    wrong = SpecClasses.from_modules(
        release.import_module("snowflake.ml.model.batch_inference"),
        release.import_module("snowflake.ml.model.inference_engine"),
    )
    with pytest.raises(SnowflakeJobError, match="JobSpec"):
        build_run_batch_kwargs("1.x", X, EVERY_OPTION, wrong)


def test_release_without_the_needed_classes_is_refused(
    get_release: Callable[[str], Release],
) -> None:
    release = get_release("2.0.0")  # no 1.x module at all
    with pytest.raises(SnowflakeJobError, match=r"JobSpec.*not supported"):
        SpecClasses.installed("1.x", import_module=release.import_module)
