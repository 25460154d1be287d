"""A fake Snowflake that holds `SnowflakeBatchRunner` to the real SDK's contracts, offline.

```python
fake = FakeSnowflake(answer=lambda messages, params: "FINAL CLASSIFICATION: NORMAL")
runner = SnowflakeBatchRunner(session=fake.session, model_version=fake.model_version,
                              job_getter=fake.get_job, sleep=lambda s: None, **settings)
```

What is real and what is faked (docs/concepts/checked-against-real.md has the full list):

* `FakeSession` wraps Snowpark **local testing** (`local_testing=True`) for
  `create_dataframe`, `to_pandas`, wildcard `file.put`, `file.get` and `put_stream`; it
  emulates the few statements local testing lacks (`LS`, `CREATE/DESC/ALTER STAGE`) over
  the same local stage files, and counts every round trip (`calls`).
* `FakeModelVersion.run_batch` carries the `run_batch` signature of the **installed**
  release, or of another release read from its wheel (`release=WheelRelease(...)`), and
  binds each call to it; each spec argument must be an instance of the class that
  release's `run_batch` is annotated with; params are checked by snowflake-ml-python's own
  `validate_params` against a real signature from `snowflake.ml.model.openai_signatures`.
  `SaveMode` is applied as each API does (1.x: the client empties the output location;
  2.x: the server's preflight empties it, sparing `_snowflake_temporary/`). Output parquet
  is written in the real layout (1.x: into the output location; 2.x:
  `<output>/<job_name>/`), with the OpenAI chat-completion columns plus every input column
  passed through.
* `structured_outputs="ignore"` answers free text whatever `response_format` says;
  `"honour"` answers a JSON document of the schema, as vLLM's guided decoding does
  (`honour_response_format`).
* Jobs live in the session's namespace under their (qualified, upper-case) name: a second
  job of one name and an unknown name raise the real `SnowparkSQLException`
  (`sql_error_code` 2002 and 2003). `FakeJob` scripts statuses (`PENDING → RUNNING →
  DONE` by default), logs and cancel. `interrupt=` kills the client inside `run_batch`,
  before or after the job is created.

The releases (signatures, spec classes, wheels) are `medbatch.testing._snowflake_releases`,
the session `medbatch.testing._snowflake_session`; both are re-exported here.
"""

from __future__ import annotations

import inspect
import io
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from medbatch.snowflake.api import SpecClasses, detect_api
from medbatch.testing._snowflake_releases import (
    SPEC_PARAMETERS,
    TESTED_WHEELS,
    SnowflakeRelease,
    annotated_spec_classes,
    installed_run_batch_signature,
    load_release_from_wheel,
    openai_chat_signature,
    sf127_wheel,
    sf_wheel,
    snowflake_release,
)
from medbatch.testing._snowflake_session import FakeSession, qualified_name, sql_error
from medbatch.testing._snowflake_wheels import WheelRelease, run_batch_signature_from_source

__all__ = [
    "SPEC_PARAMETERS",
    "TESTED_WHEELS",
    "FakeJob",
    "FakeModelVersion",
    "FakeSession",
    "FakeSnowflake",
    "SnowflakeRelease",
    "WheelRelease",
    "annotated_spec_classes",
    "honour_response_format",
    "installed_run_batch_signature",
    "load_release_from_wheel",
    "openai_chat_signature",
    "run_batch_signature_from_source",
    "sf127_wheel",
    "sf_wheel",
    "snowflake_release",
]

Answer = Callable[[list[dict[str, Any]], dict[str, Any]], str | None]
"""`(messages, params) -> answer text`, or None to drop the row (a lost output row)."""


def _conforms(value: Any, schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "string":
        return isinstance(value, str)
    if kind == "object":
        properties = schema.get("properties", {})
        if not isinstance(value, dict) or not set(schema.get("required", ())) <= set(value):
            return False
        if schema.get("additionalProperties") is False and not set(value) <= set(properties):
            return False
        return all(_conforms(value[key], properties[key]) for key in value if key in properties)
    raise NotImplementedError(f"honour_response_format does not know schema type {kind!r}")


def _instance(schema: Mapping[str, Any], text: str) -> Any:
    kind = schema.get("type")
    if kind == "string" and "enum" in schema:
        # The member the free answer names first (the longest at a tie, so "POST_MI" is not
        # read as "MI"); a grammar-constrained model that named none still emits a member.
        named = [(text.find(m), -len(m), m) for m in schema["enum"] if m in text]
        return min(named)[2] if named else schema["enum"][0]
    if kind == "string":
        return text
    if kind == "object":
        properties = schema.get("properties", {})
        return {key: _instance(properties[key], text) for key in schema.get("required", ())}
    raise NotImplementedError(f"honour_response_format does not know schema type {kind!r}")


def honour_response_format(text: str, response_format: Mapping[str, Any]) -> str:
    """The content a server that honours `response_format` returns for free answer `text`.

    Snowflake's vLLM engine serves the stock OpenAI chat signatures, and vLLM compiles a
    `json_schema` response format into a grammar that masks every token outside it: the
    message content is always a JSON document valid against the schema (with `strict`, the
    required properties and nothing else), e.g. `{"label": "POST_MI"}`, never free text.
    The fake cannot steer a model token by token, so it keeps an answer that already is
    such a document and otherwise builds one from the free answer: an `enum` string gets the
    member the answer names first (the first member if none), any other string the answer.

    Raises:
        NotImplementedError: A response format or schema feature outside that subset.
    """
    if response_format.get("type") != "json_schema":
        raise NotImplementedError(f"response_format type {response_format.get('type')!r}")
    schema = response_format["json_schema"]["schema"]
    try:
        if _conforms(json.loads(text), schema):
            return text
    except json.JSONDecodeError:
        pass
    return json.dumps(_instance(schema, text))


# -- jobs and the model version -------------------------------------------------------------


IMAGE_TOKENS = 256
"""Prompt tokens per image (Gemma 3 / MedGemma encode every image as 256 soft tokens)."""


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    # Words stand in for text tokens; each image adds its fixed block, as vLLM counts it.
    tokens = 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part.get("type") == "image_url":
                tokens += IMAGE_TOKENS
            else:
                tokens += len(str(part.get("text") or "").split())
    return tokens


class FakeJob:
    """A batch job whose statuses follow a script; the last one sticks.

    Args:
        job_id: Fully qualified job name.
        statuses: Status sequence returned by successive `status` reads; an exception
            instance in it is raised instead (a dropped connection).
        logs: Text `get_logs` returns.
    """

    def __init__(self, job_id: str, statuses: Sequence[Any], logs: str = "") -> None:
        self.id = job_id
        self.name = job_id.rsplit(".", 1)[-1]
        self._script = list(statuses)
        self.logs = logs
        self.cancelled = False
        self.status_reads = 0

    @property
    def status(self) -> str:
        self.status_reads += 1
        if self.cancelled:
            return "CANCELLED"
        current = self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if isinstance(current, BaseException):
            raise current
        return str(current)

    def get_logs(
        self, limit: int = -1, instance_id: int | None = None, *, as_list: bool = False, **_: Any
    ) -> str | list[str]:
        lines = self.logs.splitlines()
        if limit >= 0:
            lines = lines[-limit:] if limit else []
        return lines if as_list else "\n".join(lines)

    def cancel(self) -> None:
        self.cancelled = True

    def wait(self, timeout: float = -1) -> str:
        while (status := self.status) not in {"DONE", "FAILED", "CANCELLED", "INTERNAL_ERROR"}:
            pass
        return status


def _make_run_batch(signature: inspect.Signature) -> Callable[..., Any]:
    def run_batch(self: FakeModelVersion, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)  # TypeError, as the real call would
        return self._submit(bound.arguments)

    run_batch.__signature__ = signature  # type: ignore[attr-defined]
    return run_batch


StructuredOutputs = Literal["ignore", "honour"]


class FakeModelVersion:
    """A `ModelVersion` whose `run_batch` checks the call and writes real-layout output.

    Args:
        session: The `FakeSession` whose stages receive the output.
        answer: `(messages, params) -> text` producing each row's answer.
        signature: The model function's `ModelSignature` (default: the stock OpenAI chat
            signature with params).
        run_batch_signature: The `run_batch` signature to bind to (default: the release's,
            else the installed one).
        release: Another snowflake-ml-python release (a wheel) to behave as: its
            `run_batch` signature, and its annotated spec classes as the ones calls must use.
        specs: Spec classes, for tests that build calls by hand (default: the release's or
            the installed package's).
        structured_outputs: `"ignore"`: answers are the free text `answer` returns (a server
            that drops `response_format`); `"honour"`: when `params` carry a
            `response_format`, each answer becomes a JSON document of its schema, as vLLM's
            guided decoding returns (`honour_response_format`).
        statuses: Status script of each submitted job.
        logs: Job log text.
        nested_output: Write `choices`/`usage` as nested parquet values instead of JSON text.
        omit_id_column: Drop our id column from the output (to test the loud failure).
        files_per_job: Output parquet files per job (as several workers write).
        interrupt: Raise `KeyboardInterrupt` inside the next `run_batch` call, `"before"` or
            `"after"` the job is created (a client killed while run_batch blocks).
    """

    _signature: inspect.Signature

    def __new__(
        cls,
        *args: Any,
        run_batch_signature: inspect.Signature | None = None,
        release: WheelRelease | None = None,
        **kwargs: Any,
    ) -> FakeModelVersion:
        signature = run_batch_signature or (
            release.run_batch_signature() if release else installed_run_batch_signature()
        )
        subclass = type(cls.__name__, (cls,), {"run_batch": _make_run_batch(signature)})
        instance: FakeModelVersion = object.__new__(subclass)
        instance._signature = signature
        return instance

    def __init__(
        self,
        session: FakeSession,
        answer: Answer,
        *,
        signature: Any | None = None,
        run_batch_signature: inspect.Signature | None = None,
        release: WheelRelease | None = None,
        specs: SpecClasses | None = None,
        structured_outputs: StructuredOutputs = "ignore",
        statuses: Sequence[Any] = ("PENDING", "RUNNING", "DONE"),
        logs: str = "vllm: model loaded\nbatch inference finished",
        nested_output: bool = False,
        omit_id_column: bool = False,
        files_per_job: int = 2,
        interrupt: Literal["before", "after"] | None = None,
    ) -> None:
        self.session = session
        self.answer = answer
        self.function_signature = signature or openai_chat_signature()
        self.api = detect_api(self._signature)
        self.release = release
        self.specs = specs or SpecClasses.installed(
            self.api, import_module=release.import_module if release else None
        )
        self.spec_classes = annotated_spec_classes(self._signature, release)
        self.structured_outputs = structured_outputs
        self.statuses = list(statuses)
        self.logs = logs
        self.nested_output = nested_output
        self.omit_id_column = omit_id_column
        self.files_per_job = files_per_job
        self.interrupt = interrupt
        self.calls: list[dict[str, Any]] = []
        self.jobs: dict[str, FakeJob] = {}
        self.removed: list[tuple[str, int]] = []

    def show_functions(self) -> list[dict[str, Any]]:
        return [
            {
                "name": "__CALL__",
                "target_method": "__call__",
                "target_method_function_type": "TABLE_FUNCTION",
                "signature": self.function_signature,
                "is_partitioned": False,
            }
        ]

    def _check_specs(self, arguments: dict[str, Any]) -> None:
        for name, expected in self.spec_classes.items():
            value = arguments.get(name)
            if value is not None and not isinstance(value, expected):
                raise TypeError(
                    f"{name} must be the {expected.__module__}.{expected.__qualname__} that "
                    f"run_batch is annotated with, got {type(value).__module__}."
                    f"{type(value).__qualname__}"
                )

    def _validate_params(self, params: dict[str, Any] | None) -> None:
        from snowflake.ml.model._client.ops import param_utils

        param_utils.validate_params(params, self.function_signature.params)

    def _job_name(self, arguments: dict[str, Any]) -> str:
        if self.api == "1.x":
            job_spec = arguments.get("job_spec")
            name = job_spec.job_name if job_spec is not None else None
        else:
            name = arguments.get("job_name")
        return name or f"BATCH_INFERENCE_{uuid.uuid4().hex.upper()}"

    def _enforce_save_mode(self, output: str, mode: Any) -> None:
        # 1.x: the client lists the output location and REMOVEs it all (OVERWRITE) or
        # raises FileExistsError (ERROR). 2.x: the server's preflight scans the location,
        # skipping the reserved `_snowflake_temporary/` input folder, and OVERWRITE removes
        # what it finds (service_ops.py's comment in 2.6); ERROR's server message is ours.
        keep = None if self.api == "1.x" else "_snowflake_temporary"
        present = [
            rel
            for rel, _, _ in self.session.stage_files(output)
            if not (keep and f"/{keep}/" in f"/{rel}")
        ]
        if not present:
            return
        if str(getattr(mode, "value", mode)).lower() == "overwrite":
            self.removed.append((output, self.session.remove(output, keep=keep)))
        elif self.api == "1.x":
            raise FileExistsError(f"Output stage location '{output}' is not empty.")
        else:
            raise sql_error(f"output location {output} is not empty (save mode ERROR)", 0)

    def _submit(self, arguments: dict[str, Any]) -> FakeJob:
        self.calls.append(arguments)
        self._check_specs(arguments)
        input_spec = arguments.get("input_spec")
        params = input_spec.params if input_spec is not None else None
        self._validate_params(params)
        output_spec = arguments["output_spec"]
        output = output_spec.stage_location.rstrip("/") + "/"
        job_id = qualified_name(
            self._job_name(arguments), self.session.database, self.session.schema
        )
        short = job_id.rsplit(".", 1)[-1]
        if job_id in self.jobs:
            raise sql_error(f"SQL compilation error:\nObject '{job_id}' already exists.", 2002)
        if self.interrupt == "before":
            self.interrupt = None
            raise KeyboardInterrupt
        frame = arguments["X"].to_pandas()
        if self.api == "1.x":
            self._enforce_save_mode(output, output_spec.mode)
            temporary, results = f"{output}_temporary/", output
        else:
            temporary = f"{output}_snowflake_temporary/{uuid.uuid4().hex}/"
            results = f"{output}{short}/"
        self._write_parquet(frame, f"{temporary}input.parquet")
        if self.api == "2.x":
            self._enforce_save_mode(output, output_spec.mode)
        job = FakeJob(job_id, self.statuses, self.logs)
        self.jobs[job_id] = job
        if self.statuses[-1] == "DONE":
            self._write_output(frame, params or {}, results)
        if self.interrupt == "after":
            self.interrupt = None
            raise KeyboardInterrupt
        return job

    def _content(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> str | None:
        text = self.answer(messages, params)
        response_format = params.get("response_format")
        if text is not None and self.structured_outputs == "honour" and response_format:
            return honour_response_format(text, response_format)
        return text

    def _write_output(self, frame: Any, params: dict[str, Any], results: str) -> None:
        import pandas as pd

        rows = []
        for index, row in enumerate(frame.to_dict("records")):
            text = self._content(json.loads(row["MESSAGES"]), params)
            if text is None:
                continue
            choices = [
                {
                    "index": 0,
                    "message": {"content": text, "name": None, "role": "assistant"},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ]
            prompt_tokens = _prompt_tokens(json.loads(row["MESSAGES"]))
            usage = {
                "completion_tokens": len(text.split()),
                "prompt_tokens": prompt_tokens,
                "total_tokens": prompt_tokens + len(text.split()),
            }
            out = {
                "id": f"chatcmpl-{index}",
                "object": "chat.completion",
                "created": 1.7e9,
                "model": "medgemma",
                "choices": choices if self.nested_output else json.dumps(choices),
                "usage": usage if self.nested_output else json.dumps(usage),
                **{
                    k: v
                    for k, v in row.items()
                    if not (self.omit_id_column and k.upper() == "MEDBATCH_RECORD_ID")
                },
            }
            rows.append(out)
        parts = max(1, self.files_per_job)
        for part in range(parts):
            chunk = rows[part::parts]
            if chunk:
                self._write_parquet(pd.DataFrame(chunk), f"{results}data_0_{part}_0.parquet")
        self.session.local.file.put_stream(
            io.BytesIO(b""), f"{results}_SUCCESS", auto_compress=False
        )

    def _write_parquet(self, frame: Any, location: str) -> None:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        buffer.seek(0)
        self.session.local.file.put_stream(buffer, location, auto_compress=False, overwrite=True)


class FakeSnowflake:
    """A `FakeSession` and `FakeModelVersion` wired together, plus `get_job` for re-attach.

    Args:
        answer: `(messages, params) -> text` for each row.
        database, schema: The session's (and the model's) namespace; jobs are created there.
        **model_version_options: `FakeModelVersion` options.
    """

    def __init__(
        self,
        answer: Answer,
        *,
        database: str = "MEDBATCH_DB",
        schema: str = "PUBLIC",
        **model_version_options: Any,
    ) -> None:
        self.session = FakeSession(database, schema)
        self.model_version = FakeModelVersion(self.session, answer, **model_version_options)
        self.reattached: list[str] = []
        self.lookups: list[str] = []

    def get_job(self, job_id: str, session: Any = None) -> FakeJob:
        """Look a job up by (qualified) name, as `snowflake.ml.jobs.get_job` does.

        Raises:
            SnowparkSQLException: `sql_error_code=2003` when there is no such job, as the
                real `get_job` raises after its `DESCRIBE SERVICE` and job-history lookups.
        """
        qualified = qualified_name(job_id, self.session.database, self.session.schema)
        self.lookups.append(qualified)
        job = self.model_version.jobs.get(qualified)
        if job is None:
            raise sql_error(f"Job {qualified} does not exist or could not be retrieved", 2003)
        self.reattached.append(job_id)
        return job

    @property
    def run_batch_calls(self) -> int:
        """How many times `run_batch` was called."""
        return len(self.model_version.calls)

    @property
    def jobs_created(self) -> int:
        """How many jobs exist (each costs GPU time)."""
        return len(self.model_version.jobs)
