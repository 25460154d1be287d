"""`SnowflakeBatchRunner`: one `ModelVersion.run_batch` job per batch, on a GPU compute pool.

```
requests ─▶ local images ─1 LS + 1 PUT/folder─▶ @IMAGE_STAGE (content-addressed)
         ─▶ rows (MEDBATCH_RECORD_ID, MESSAGES json)
         ─▶ state() = {job name, output}  ── persisted BEFORE run_batch is called
         ─▶ run_batch(job_name=DB.SCHEMA.MEDBATCH_…, output=@OUT/results/<job name>/)
         ─▶ wait (rich status) ─ DONE ─▶ output parquet ─join on id─▶ responses
                               └ FAILED/timeout ─▶ log tail; every record an error

resume: state has a job id ─▶ re-attach
        state has only the name (interrupted inside run_batch, which blocks through the
        image build) ─▶ look the job up by that name ─ found ─▶ re-attach
                                                      └ absent ─▶ submit under the SAME
        name: Snowflake refuses a second job of one name, so one run never pays for two
```

Each job gets its own output folder: `OVERWRITE` empties the folder it is given (1.x in
the client, 2.x in the server's preflight), so a shared folder would let one job delete
another run's results. Works with the releases `medbatch.snowflake.api.SUPPORTED_RELEASES`
names (see `medbatch.snowflake.api`). The input rows are built in `medbatch.snowflake.inputs`,
the wait for a job's end in `medbatch.snowflake.jobs`, the settings in
`medbatch.runners._snowflake_config` (re-exported here); this module submits and re-attaches.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

from medbatch.constraints import unwrap_json_choice
from medbatch.records import InferenceRequest, InferenceResponse, LabelConstraint
from medbatch.runners._snowflake_config import SnowflakeBatchRunnerConfig
from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig
from medbatch.snowflake import SnowflakeJobError
from medbatch.snowflake.api import (
    ApiVersion,
    JobOptions,
    SpecClasses,
    build_run_batch_kwargs,
    detect_api,
    function_signature,
    plan_params,
)
from medbatch.snowflake.identifiers import (
    StageLocation,
    validate_identifier,
    validate_unquoted_stage_path,
)
from medbatch.snowflake.inputs import MESSAGES_COLUMN, input_frame
from medbatch.snowflake.jobs import (
    ALREADY_EXISTS_CODE,
    NOT_FOUND_CODE,
    TERMINAL_STATUSES,
    fail_all,
    wait_for_job,
)
from medbatch.snowflake.results import read_results
from medbatch.snowflake.session import get_session
from medbatch.snowflake.stage import StageUploader

__all__ = ["SnowflakeBatchRunner", "SnowflakeBatchRunnerConfig"]

# Kept importable from here, where they used to live.
_MOVED = (ALREADY_EXISTS_CODE, MESSAGES_COLUMN, NOT_FOUND_CODE, TERMINAL_STATUSES)

logger = logging.getLogger(__name__)


def _response_format(constraint: LabelConstraint) -> dict[str, Any]:
    # The constraints module (shared by every back-end) owns the translation; fall back to
    # the OpenAI json_schema shape the stock signatures declare if it is not installed yet.
    try:
        module = importlib.import_module("medbatch.constraints")
    except ImportError:
        return {
            "type": "json_schema",
            "json_schema": {"name": "label", "schema": constraint.json_schema(), "strict": True},
        }
    return dict(module.to_snowflake_response_format(constraint))


ENGINE_NONE_CAVEATS = {
    "constrained decoding (engine=None)": (
        "not applied: the Hugging Face chat wrapper drops response_format, so constrained "
        "answers come back as free text"
    ),
    "images (engine=None)": (
        "dropped for text-generation models: the chat wrapper keeps only the text parts "
        "of each message; use engine='vllm' for a vision-language model"
    ),
}
"""What `plan()` warns about when `engine=None` (read from snowflake-ml-python 2.6's
`huggingface/_utils._resolve_chat_params` and `_openai_chat_wrapper._apply_chat_template`)."""


class SnowflakeBatchRunner(BatchRunner):
    """Classify with a model from the Snowflake Model Registry via `run_batch`.

    Args:
        config: The settings; None: the defaults plus `overrides`.
        session: A Snowpark session to use (else built from `connection_name`/env/notebook).
        model_version: A `ModelVersion` to use (else looked up in the registry at `start`).
        specs: Spec classes to build the call with (default: the installed package's).
        job_getter: `(job_id, session) -> job` for re-attaching (default
            `snowflake.ml.jobs.get_job`).
        sleep, clock: Time functions (seams for tests).
        **overrides: Fields of `SnowflakeBatchRunnerConfig`, validated by it.

    Raises:
        SnowflakeIdentifierError: A name is not a plain identifier (before any SQL runs).

    Example:
        ```python
        runner = SnowflakeBatchRunner(database="MEDGEMMA_DEMO", model="MEDGEMMA_4B_IT",
            version="V1", compute_pool="MEDGEMMA_COMPUTE_POOL")
        with runner:
            responses = list(runner.run(requests))
        ```
    """

    name: ClassVar[str] = "snowflake"
    config_class: ClassVar[type[RunnerConfig] | None] = SnowflakeBatchRunnerConfig
    batch_size: int | None = None
    capabilities = RunnerCapabilities(
        batching=True,
        constrained_decoding=True,
        image_inputs=frozenset({"bytes", "url", "stage"}),
        expensive=True,
    )

    def __init__(
        self,
        config: SnowflakeBatchRunnerConfig | None = None,
        /,
        *,
        session: Any | None = None,
        model_version: Any | None = None,
        specs: SpecClasses | None = None,
        job_getter: Callable[[str, Any], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        **overrides: Any,
    ) -> None:
        self.config: SnowflakeBatchRunnerConfig = self._settings(config, overrides)
        cfg = self.config
        for value, what in (
            (cfg.database, "database"),
            (cfg.schema_name, "schema"),
            (cfg.model, "model"),
            (cfg.version, "model version"),
            (cfg.compute_pool, "compute pool"),
            (cfg.image_stage, "image stage"),
            (cfg.output_stage, "output stage"),
        ):
            validate_identifier(value, what)
        for optional, what in ((cfg.warehouse, "warehouse"), (cfg.function_name, "function")):
            if optional is not None:
                validate_identifier(optional, what)
        validate_unquoted_stage_path(cfg.output_path, "output_path")
        namespace = f"{cfg.database}.{cfg.schema_name}"
        self.namespace = namespace
        self.image_location = StageLocation(f"{namespace}.{cfg.image_stage}", cfg.image_path)
        self.output_location = StageLocation(f"{namespace}.{cfg.output_stage}", cfg.output_path)
        self.model_id = f"snowflake:{namespace}.{cfg.model}/{cfg.version}"
        self.batch_size = cfg.max_records_per_job
        self._session = session
        self._model_version = model_version
        self._specs = specs
        self._job_getter = job_getter
        self._sleep = sleep
        self._clock = clock
        self._api: ApiVersion | None = None
        self._jobs: dict[str, dict[str, Any]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def session(self) -> Any:
        """The Snowpark session (opened on first use)."""
        if self._session is None:
            self._session = get_session(connection_name=self.config.connection_name)
        return self._session

    def start(self) -> None:
        """Open the session, find the model version, detect the API, create the stages."""
        if self._api is not None:
            return
        if self._model_version is None:
            self._model_version = self._lookup_model_version()
        self._api = detect_api(type(self._model_version).run_batch)
        if self._specs is None:
            self._specs = SpecClasses.installed(self._api)
        if self.config.create_stages:
            for location in (self.image_location, self.output_location):
                StageUploader(self.session, location).ensure_stage()

    def _lookup_model_version(self) -> Any:
        from snowflake.ml.registry import Registry

        cfg = self.config
        try:
            registry = Registry(
                session=self.session, database_name=cfg.database, schema_name=cfg.schema_name
            )
            return registry.get_model(cfg.model).version(cfg.version)
        except Exception as exc:
            raise SnowflakeJobError(
                f"cannot load model {cfg.model} version {cfg.version} from the registry in "
                f"{cfg.database}.{cfg.schema_name}: {exc}"
            ) from exc

    def describe(self) -> dict[str, Any]:
        """Runner facts for the manifest (no credentials live in the config)."""
        return {**super().describe(), "api": self._api, **self.config.model_dump(mode="json")}

    def plan(self, n_records: int) -> dict[str, str]:
        """The job plan for `n_records`, for `medbatch validate` (nothing is submitted).

        Reads only the settings: no session, no SQL.
        """
        cfg = self.config
        per_job = cfg.max_records_per_job or n_records
        jobs = -(-n_records // per_job) if n_records else 0
        return {
            "snowflake jobs": str(jobs),
            "rows per job (max)": f"{min(per_job, n_records):,}",
            "compute pool": cfg.compute_pool,
            "model": f"{cfg.model} / {cfg.version}",
            "replicas × GPUs": f"{cfg.replicas} × {cfg.gpus_per_replica or 'default'}",
            "workers per replica": str(cfg.num_workers or "default"),
            "max batch rows": str(cfg.max_batch_rows or "default"),
            "engine": cfg.engine or "model default",
            "input frame chunks": f"{-(-n_records // cfg.chunk_rows) if n_records else 0}",
            "output folder": f"{self.output_location.url}<job name>/ (one per job)",
            **(ENGINE_NONE_CAVEATS if cfg.engine is None else {}),
        }

    def state(self) -> dict[str, Any]:
        """`{"jobs": {batch key: {job_name, job_id, output, api, status}}}`."""
        return {"jobs": {key: dict(value) for key, value in self._jobs.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        """Re-attach to the jobs of an interrupted run instead of submitting new ones."""
        self._jobs = {key: dict(value) for key, value in state.get("jobs", {}).items()}

    # -- one batch = one job per distinct (params, constraint) ------------------------------

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        self.start()
        groups: dict[str, list[InferenceRequest]] = defaultdict(list)
        for request in requests:
            key = request.params.model_dump_json() + (
                request.constraint.model_dump_json() if request.constraint else ""
            )
            groups[key].append(request)
        for group in groups.values():
            yield from self._run_job(group)

    def _batch_key(self, requests: Sequence[InferenceRequest]) -> str:
        digest = hashlib.sha256(self.model_id.encode())
        digest.update(requests[0].params.model_dump_json().encode())
        for request in sorted(requests, key=lambda r: r.record_id):
            # Ids, prompts and image contents: the same work gives the same key on resume.
            images = ",".join(image.sha256 for image in request.images)
            texts = "\0".join(message.text_content for message in request.messages)
            digest.update(f"{request.record_id}\0{images}\0{texts}\n".encode())
        return digest.hexdigest()[:16]

    def _run_job(self, requests: Sequence[InferenceRequest]) -> Iterator[InferenceResponse]:
        key = self._batch_key(requests)
        entry = self._jobs.get(key)
        if entry and entry.get("job_id"):
            logger.info("re-attaching to Snowflake job %s", entry["job_id"])
            job = self._get_job(entry["job_id"])
        elif entry and entry.get("job_name"):
            # Saved before run_batch returned: the job may exist although we never got its id.
            entry, job = self._recover(key, entry, requests)
        else:
            entry, job = self._submit(key, requests)
        ids = [r.record_id for r in requests]
        status = entry.get("status")
        if status not in TERMINAL_STATUSES:
            cfg = self.config
            status = wait_for_job(
                job,
                entry,
                len(ids),
                poll_interval_s=cfg.poll_interval_s,
                timeout_s=cfg.timeout_s,
                detach_on_interrupt=cfg.detach_on_interrupt,
                progress=cfg.progress,
                clock=self._clock,
                sleep=self._sleep,
                on_change=self._notify_state,
            )
        if status != "DONE":
            yield from fail_all(job, entry, ids, status, log_tail_lines=self.config.log_tail_lines)
            return
        # Choice mode went out as a `{"label": enum}` JSON schema (response_format has no
        # choice type): read `{"label": "X"}` back as `X`, as the OpenAI runner does.
        constraint = requests[0].constraint
        choice = (
            constraint
            if constraint is not None and constraint.mode == "choice" and entry.get("constrained")
            else None
        )
        for response in read_results(
            self.session, StageLocation.parse(entry["results"]), ids, job=entry["job_name"]
        ):
            if choice is None or response.text is None:
                yield response
                continue
            metadata = dict(response.metadata)
            text = unwrap_json_choice(response.text, choice, metadata)
            yield response.model_copy(update={"text": text, "metadata": metadata})

    def _job_id(self, job_name: str) -> str:
        return f"{self.namespace}.{job_name}"

    def _recover(
        self, key: str, entry: dict[str, Any], requests: Sequence[InferenceRequest]
    ) -> tuple[dict[str, Any], Any]:
        name = entry["job_name"]
        job = self._find_job(name)
        if job is None:
            logger.info("Snowflake job %s was never created; submitting it now", name)
            return self._submit(key, requests, job_name=name)
        logger.info("found Snowflake job %s by name; re-attaching", name)
        return self._attach(entry, job), job

    def _attach(self, entry: dict[str, Any], job: Any) -> dict[str, Any]:
        entry["job_id"] = str(getattr(job, "id", None) or self._job_id(entry["job_name"]))
        entry["status"] = "PENDING"
        self._notify_state()
        return entry

    def _find_job(self, job_name: str) -> Any | None:
        """The job named `job_name`, or None when Snowflake says it does not exist.

        Raises:
            SnowflakeJobError: The lookup failed for another reason; nothing is submitted,
                since a job might be running.
        """
        job_id = self._job_id(job_name)
        try:
            return self._lookup_job(job_id)
        except Exception as exc:
            if getattr(exc, "sql_error_code", None) == NOT_FOUND_CODE:
                return None
            raise SnowflakeJobError(
                f"cannot tell whether Snowflake job {job_id} exists ({type(exc).__name__}: "
                f"{exc}); not submitting a second job: resume again when the lookup works"
            ) from exc

    def _submit(
        self,
        key: str,
        requests: Sequence[InferenceRequest],
        *,
        job_name: str | None = None,
    ) -> tuple[dict[str, Any], Any]:
        cfg = self.config
        model_version = self._model_version
        if self._api is None or self._specs is None or model_version is None:
            raise SnowflakeJobError("SnowflakeBatchRunner.start() did not run")
        signature = function_signature(model_version, cfg.function_name)
        first = requests[0]
        response_format = None
        if first.constraint is not None:
            response_format = _response_format(first.constraint)
        plan = plan_params(first.params, signature, response_format=response_format)
        frame = input_frame(
            self.session,
            requests,
            key=key,
            image_location=self.image_location,
            upload_parallel=cfg.upload_parallel,
            chunk_rows=cfg.chunk_rows,
        )
        if job_name is None:
            job_name = f"MEDBATCH_{key.upper()}_{uuid.uuid4().hex[:8].upper()}"
        # One output base per job: OVERWRITE empties the base it is given (1.x client-side,
        # 2.x in the server's preflight), so a shared base could delete another run's results.
        output = self.output_location.child(job_name)
        # 1.x writes into the base itself; 2.x under <base>/<job name>/.
        results = output if self._api == "1.x" else output.child(job_name)
        options = JobOptions(
            compute_pool=cfg.compute_pool,
            output_location=output.url,
            params=plan.params,
            job_name=self._job_id(job_name),
            function_name=cfg.function_name,
            gpu_requests=str(cfg.gpus_per_replica) if cfg.gpus_per_replica else None,
            cpu_requests=cfg.cpu_requests,
            memory_requests=cfg.memory_requests,
            replicas=cfg.replicas,
            num_workers=cfg.num_workers,
            max_batch_rows=cfg.max_batch_rows,
            warehouse=cfg.warehouse,
            engine=cfg.engine,
            engine_args=cfg.engine_args,
        )
        kwargs = build_run_batch_kwargs(self._api, frame, options, self._specs)
        entry: dict[str, Any] = {
            "job_name": job_name,
            "job_id": None,
            "results": results.url,
            "api": self._api,
            "status": "SUBMITTING",
            "records": len(requests),
            "constrained": plan.constrained,
        }
        # Persisted before the call: run_batch blocks through the image build, and a run
        # interrupted there must find this job by name instead of starting another.
        self._jobs[key] = entry
        self._notify_state()
        try:
            job = model_version.run_batch(**kwargs)
        except Exception as exc:
            if getattr(exc, "sql_error_code", None) == ALREADY_EXISTS_CODE:
                # An earlier, interrupted submission created it after all: use that one.
                found = self._find_job(job_name)
                if found is not None:
                    logger.info("Snowflake job %s already exists; re-attaching", job_name)
                    return self._attach(entry, found), found
            # The entry (and its name) stays: a resume looks the job up before submitting.
            entry["status"] = "SUBMIT_FAILED"
            self._notify_state()
            raise SnowflakeJobError(f"run_batch did not start job {job_name}: {exc}") from exc
        self._attach(entry, job)
        logger.info("submitted Snowflake job %s for %d records", entry["job_id"], len(requests))
        return entry, job

    def _lookup_job(self, job_id: str) -> Any:
        getter = self._job_getter
        if getter is None:
            from snowflake.ml.jobs import get_job

            def getter(job_id: str, session: Any) -> Any:
                return get_job(job_id, session=session)

        return getter(job_id, self.session)

    def _get_job(self, job_id: str) -> Any:
        try:
            return self._lookup_job(job_id)
        except Exception as exc:
            raise SnowflakeJobError(f"cannot re-attach to Snowflake job {job_id}: {exc}") from exc
