"""The seam to `ModelVersion.run_batch`, for snowflake-ml-python 1.x and 2.x.

The two major versions take the same job in different shapes (read from the packages'
sources, not their docs):

```
                     1.x (1.27 – 1.54)                       2.x (2.0 – 2.6)
spec classes         snowflake.ml.model (1.27),              snowflake.ml.model.batch_inference
                     snowflake.ml.model.batch (1.28+)
GPUs, CPU, memory    job_spec=JobSpec(gpu_requests=...)      resources_spec=ResourcesSpec(...)
workers, batch rows  JobSpec(num_workers, max_batch_rows)    inference_spec=InferenceSpec(...)
vLLM                 inference_engine_options={"engine":..}  InferenceSpec(engine_options=...)
job name, replicas   JobSpec(job_name, replicas)             job_name=, replicas= keywords
results folder       <stage_location>                        <stage_location>/<job_name>/
OVERWRITE removes    <stage_location> (client-side)          <stage_location> (server preflight)
input copy           <stage_location>/_temporary/            <stage_location>/_snowflake_temporary/
unknown spec fields  accepted silently                       rejected (extra="forbid")
params checked       client-side (validate_params)           server-side
```

Which one is installed is decided from the real `run_batch` signature (`detect_api`), never
from a version string, and the spec classes are taken from the module that API needs: 1.50
to 1.54 already ship the 2.x `batch_inference` module (no `JobSpec`) while their `run_batch`
still takes `job_spec=`, and 1.28 to 1.49 no longer export the specs from
`snowflake.ml.model`. Generation parameters are translated to the names the model
function's signature declares: the stock OpenAI chat signatures take
`max_completion_tokens`, not `max_tokens`, and 1.x rejects unknown names client-side.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from medbatch.errors import MissingDependencyError
from medbatch.records import GenerationParams
from medbatch.snowflake import SnowflakeJobError, SnowflakeParamsError

__all__ = [
    "SPEC_CLASS_NAMES",
    "SPEC_MODULES",
    "SUPPORTED_RELEASES",
    "ApiVersion",
    "JobOptions",
    "ParamPlan",
    "SpecClasses",
    "build_run_batch_kwargs",
    "detect_api",
    "function_signature",
    "plan_params",
]

logger = logging.getLogger(__name__)

ApiVersion = Literal["1.x", "2.x"]

MAX_TOKENS_NAMES = ("max_completion_tokens", "max_tokens", "max_new_tokens")
"""Names a signature may use for the answer length, in order of preference."""

SUPPORTED_RELEASES = "snowflake-ml-python 1.27 to 1.54 and 2.0 to 2.6"
"""The releases whose argument building is tested (see docs/concepts/checked-against-real.md)."""

SPEC_MODULES: dict[ApiVersion, tuple[str, ...]] = {
    # 1.28 moved the 1.x specs to `snowflake.ml.model.batch`; 1.27 has them at the top.
    "1.x": ("snowflake.ml.model.batch", "snowflake.ml.model"),
    "2.x": ("snowflake.ml.model.batch_inference",),
}
"""Where each API's spec classes are exported, first match wins."""

SPEC_CLASS_NAMES: dict[ApiVersion, tuple[str, ...]] = {
    "1.x": ("InputSpec", "OutputSpec", "SaveMode", "JobSpec"),
    "2.x": ("InputSpec", "OutputSpec", "SaveMode", "ResourcesSpec", "InferenceSpec"),
}
"""The classes `build_run_batch_kwargs` needs for each API."""


def detect_api(run_batch: Callable[..., Any] | inspect.Signature) -> ApiVersion:
    """Tell 1.x from 2.x by the parameters of the real `ModelVersion.run_batch`.

    Raises:
        SnowflakeJobError: The signature matches neither (an unsupported release).
    """
    signature = (
        run_batch if isinstance(run_batch, inspect.Signature) else inspect.signature(run_batch)
    )
    names = set(signature.parameters)
    if "job_spec" in names:
        return "1.x"
    if {"resources_spec", "inference_spec"} <= names:
        return "2.x"
    raise SnowflakeJobError(
        f"unsupported ModelVersion.run_batch{signature}: medbatch supports "
        f"{SUPPORTED_RELEASES} (job_spec=, or resources_spec= and inference_spec=)"
    )


@dataclass(frozen=True)
class SpecClasses:
    """The spec classes `run_batch` expects, taken from wherever the package defines them."""

    InputSpec: Any
    OutputSpec: Any
    SaveMode: Any
    InferenceEngine: Any
    JobSpec: Any = None
    ResourcesSpec: Any = None
    InferenceSpec: Any = None
    EngineOptions: Any = None
    ImageBuildSpec: Any = None

    @classmethod
    def from_modules(cls, specs: ModuleType, engine: ModuleType) -> SpecClasses:
        """Collect the classes from a specs module and `inference_engine` module."""
        return cls(
            InputSpec=specs.InputSpec,
            OutputSpec=specs.OutputSpec,
            SaveMode=specs.SaveMode,
            InferenceEngine=engine.InferenceEngine,
            JobSpec=getattr(specs, "JobSpec", None),
            ResourcesSpec=getattr(specs, "ResourcesSpec", None),
            InferenceSpec=getattr(specs, "InferenceSpec", None),
            EngineOptions=getattr(specs, "EngineOptions", None),
            ImageBuildSpec=getattr(specs, "ImageBuildSpec", None),
        )

    @classmethod
    def installed(
        cls,
        api: ApiVersion | None = None,
        *,
        import_module: Callable[[str], ModuleType] | None = None,
    ) -> SpecClasses:
        """The spec classes the installed `run_batch` of API `api` takes.

        Args:
            api: The API `detect_api` found; None detects it from the installed
                `ModelVersion.run_batch`.
            import_module: Imports a module by name (default `importlib.import_module`; a
                seam to read another release from its wheel).

        Raises:
            MissingDependencyError: snowflake-ml-python is not installed.
            SnowflakeJobError: No module of this release exports the classes `api` needs.
        """
        load = import_module or importlib.import_module
        try:
            engine = load("snowflake.ml.model.inference_engine")
            if api is None:
                api = detect_api(load("snowflake.ml.model").ModelVersion.run_batch)
        except ImportError as exc:
            raise MissingDependencyError(
                "SnowflakeBatchRunner", "snowflake-ml-python", "snowflake"
            ) from exc
        needed = SPEC_CLASS_NAMES[api]
        for name in SPEC_MODULES[api]:
            try:
                specs = load(name)
            except ImportError:
                continue
            if all(hasattr(specs, cls_name) for cls_name in needed):
                return cls.from_modules(specs, engine)
        raise SnowflakeJobError(
            f"run_batch takes the {api} arguments, but none of {', '.join(SPEC_MODULES[api])} "
            f"exports {', '.join(needed)}: this snowflake-ml-python release is not supported "
            f"({SUPPORTED_RELEASES})"
        )


@dataclass(frozen=True)
class JobOptions:
    """Everything about one job except its input rows; None leaves the SDK default.

    Attributes:
        compute_pool: GPU compute pool name.
        output_location: `@STAGE/path/` the results go under.
        params: Model-function parameters (see `plan_params`).
        job_name: Our name for the job, so a restarted run can re-attach to it.
        gpu_requests: GPUs per replica (`"1"`).
        replicas: Job nodes.
        num_workers: Inference workers per node.
        max_batch_rows: Rows per inference batch.
        engine: `vllm` or None for the model's default server.
        engine_args: Extra vLLM command-line arguments.
    """

    compute_pool: str
    output_location: str
    params: Mapping[str, Any] | None = None
    job_name: str | None = None
    function_name: str | None = None
    gpu_requests: str | None = "1"
    cpu_requests: str | None = None
    memory_requests: str | None = None
    replicas: int | None = None
    num_workers: int | None = None
    max_batch_rows: int | None = None
    warehouse: str | None = None
    engine: str | None = "vllm"
    engine_args: Sequence[str] = field(default_factory=tuple)
    image_repo: str | None = None
    force_rebuild: bool = False
    overwrite: bool = True


def _given(**values: Any) -> dict[str, Any]:
    # Only pass what was set, so every unset field keeps the installed SDK's own default.
    return {key: value for key, value in values.items() if value is not None}


def build_run_batch_kwargs(
    api: ApiVersion, frame: Any, options: JobOptions, specs: SpecClasses
) -> dict[str, Any]:
    """The keyword arguments of one `mv.run_batch(**kwargs)` call.

    Example:
        ```python
        kwargs = build_run_batch_kwargs("1.x", df, JobOptions("POOL", "@S/out/"), specs)
        job = mv.run_batch(**kwargs)
        ```
    """
    missing = [name for name in SPEC_CLASS_NAMES[api] if getattr(specs, name) is None]
    if missing:
        raise SnowflakeJobError(
            f"run_batch takes the {api} arguments but these spec classes were not found: "
            f"{', '.join(missing)} (use SpecClasses.installed({api!r}))"
        )
    mode = specs.SaveMode.OVERWRITE if options.overwrite else specs.SaveMode.ERROR
    output_spec = specs.OutputSpec(stage_location=options.output_location, mode=mode)
    input_spec = specs.InputSpec(**_given(params=dict(options.params) if options.params else None))
    engine = specs.InferenceEngine(options.engine) if options.engine else None
    kwargs: dict[str, Any] = {"compute_pool": options.compute_pool, "X": frame}
    if api == "1.x":
        kwargs["input_spec"] = input_spec
        kwargs["output_spec"] = output_spec
        kwargs["job_spec"] = specs.JobSpec(
            **_given(
                job_name=options.job_name,
                function_name=options.function_name,
                gpu_requests=options.gpu_requests,
                cpu_requests=options.cpu_requests,
                memory_requests=options.memory_requests,
                replicas=options.replicas,
                num_workers=options.num_workers,
                max_batch_rows=options.max_batch_rows,
                warehouse=options.warehouse,
                image_repo=options.image_repo,
                force_rebuild=options.force_rebuild or None,
            )
        )
        if engine is not None:
            kwargs["inference_engine_options"] = {
                "engine": engine,
                "engine_args_override": list(options.engine_args),
            }
        return kwargs
    # 2.x: the warehouse is no longer a job setting (the session's is used for the input copy).
    kwargs["output_spec"] = output_spec
    kwargs["input_spec"] = input_spec
    resources = _given(
        gpu_requests=options.gpu_requests,
        cpu_requests=options.cpu_requests,
        memory_requests=options.memory_requests,
    )
    if resources:
        kwargs["resources_spec"] = specs.ResourcesSpec(**resources)
    engine_options = (
        specs.EngineOptions(engine=engine, engine_args_override=list(options.engine_args))
        if engine is not None
        else None
    )
    inference = _given(
        num_workers=options.num_workers,
        max_batch_rows=options.max_batch_rows,
        engine_options=engine_options,
    )
    if inference:
        kwargs["inference_spec"] = specs.InferenceSpec(**inference)
    if options.image_repo or options.force_rebuild:
        kwargs["image_build_spec"] = specs.ImageBuildSpec(
            **_given(image_repo=options.image_repo, force_rebuild=options.force_rebuild)
        )
    kwargs.update(
        _given(
            function_name=options.function_name,
            job_name=options.job_name,
            replicas=options.replicas,
        )
    )
    return kwargs


def function_signature(model_version: Any, function_name: str | None = None) -> Any:
    """The `ModelSignature` of the function `run_batch` will call.

    Raises:
        SnowflakeParamsError: The model has several functions and none was named, or the
            named one does not exist.
    """
    functions = list(model_version.show_functions())
    if function_name:
        wanted = function_name.upper()
        matches = [f for f in functions if str(f["name"]).upper() == wanted]
    else:
        matches = functions if len(functions) == 1 else []
    if not matches:
        names = ", ".join(str(f["name"]) for f in functions) or "none"
        raise SnowflakeParamsError(
            f"cannot pick the model function (function_name={function_name!r}); "
            f"the model has: {names}"
        )
    return matches[0]["signature"]


@dataclass(frozen=True)
class ParamPlan:
    """How generation parameters reach the model.

    Attributes:
        params: `InputSpec(params=...)`, keyed by the names the signature declares.
        constrained: A `response_format` is among `params` (the answers are constrained).
    """

    params: dict[str, Any]
    constrained: bool = False


def _names(specs: Sequence[Any] | None) -> dict[str, str]:
    return {str(spec.name).lower(): str(spec.name) for spec in specs or ()}


def plan_params(
    generation: GenerationParams,
    signature: Any,
    *,
    response_format: Mapping[str, Any] | None = None,
) -> ParamPlan:
    """Translate `GenerationParams` to the `params` names the model function declares.

    `max_tokens` becomes `max_completion_tokens` (stock OpenAI signatures), `max_tokens` or
    `max_new_tokens`, whichever the signature has. `seed` is sent only when declared (the
    stock signatures have none; decoding is greedy by default, so nothing depends on it).

    Raises:
        SnowflakeParamsError: The signature declares no `params` (generation settings as
            input columns, as `OPENAI_CHAT_SIGNATURE` has them, are not supported), or a
            needed parameter has no counterpart; the message lists the valid names.
    """
    declared = _names(getattr(signature, "params", None))
    if not declared:
        # The stock no-params signature wants every setting as a typed input column (`stop`
        # an array, `n`, `stream`, the penalties and a `response_format` object all
        # required); we send a JSON `MESSAGES` text column only, so refuse it up front.
        raise SnowflakeParamsError(
            "the model function declares no params (generation settings as input columns, "
            "e.g. OPENAI_CHAT_SIGNATURE): medbatch passes them as params only; log the model "
            "with snowflake.ml.model.openai_signatures.OPENAI_CHAT_WITH_PARAMS_SIGNATURE"
        )
    valid = ", ".join(sorted(declared.values()))

    def name_for(candidates: Sequence[str], what: str, required: bool) -> str | None:
        for candidate in candidates:
            if candidate in declared:
                return declared[candidate]
        if required:
            raise SnowflakeParamsError(
                f"the model function has no parameter for {what} (tried "
                f"{', '.join(candidates)}); its valid parameters are: {valid}"
            )
        return None

    values: dict[str, Any] = {}
    temperature = name_for(("temperature",), "temperature", required=True)
    values[str(temperature)] = float(generation.temperature)
    max_tokens = name_for(MAX_TOKENS_NAMES, "max_tokens", required=True)
    values[str(max_tokens)] = int(generation.max_tokens)
    if generation.top_p != 1.0:
        values[str(name_for(("top_p",), "top_p", required=True))] = float(generation.top_p)
    if generation.stop:
        values[str(name_for(("stop",), "stop", required=True))] = list(generation.stop)
    if generation.seed is not None:
        seed = name_for(("seed",), "seed", required=False)
        if seed is not None:
            values[seed] = int(generation.seed)
        elif generation.temperature > 0:
            logger.warning(
                "the model function takes no seed; sampling at temperature %s is unseeded",
                generation.temperature,
            )
    constrained = False
    if response_format is not None:
        fmt = name_for(("response_format",), "response_format", required=False)
        if fmt is not None:
            values[fmt] = dict(response_format)
            constrained = True
        else:
            logger.info("the model function takes no response_format: answers are unconstrained")
    return ParamPlan(params=values, constrained=constrained)
