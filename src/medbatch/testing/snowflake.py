"""A fake Snowflake that holds `SnowflakeBatchRunner` to the real SDK's contracts, offline.

```python
fake = FakeSnowflake(answer=lambda messages, params: "FINAL CLASSIFICATION: NORMAL")
runner = SnowflakeBatchRunner(session=fake.session, model_version=fake.model_version,
                              job_getter=fake.get_job, sleep=lambda s: None, **settings)
```

What is real and what is faked:

* `FakeSession` wraps Snowpark **local testing** (`local_testing=True`) for
  `create_dataframe`, `to_pandas`, wildcard `file.put`, `file.get` and `put_stream`; it
  emulates the few statements local testing lacks (`LS`, `CREATE/DESC/ALTER STAGE`) over
  the same local stage files, and counts every round trip (`calls`).
* `FakeModelVersion.run_batch` carries the **installed** `ModelVersion.run_batch`
  signature (or one read from another release's source with `run_batch_signature_from_source`)
  and binds each call to it; spec arguments must be instances of the real spec classes;
  params are checked by snowflake-ml-python's own `validate_params` against a real
  signature from `snowflake.ml.model.openai_signatures`. Output parquet is written in the
  real layout (1.x: into the output location; 2.x: `<output>/<job_name>/`), with the
  OpenAI chat-completion columns plus every input column passed through.
* `FakeJob` scripts statuses (`PENDING → RUNNING → DONE` by default), logs and cancel.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import io
import json
import os
import re
import sys
import types
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medbatch.snowflake.api import SpecClasses, detect_api

__all__ = [
    "FakeJob",
    "FakeModelVersion",
    "FakeSession",
    "FakeSnowflake",
    "load_release_from_wheel",
    "openai_chat_signature",
    "run_batch_signature_from_source",
]

Answer = Callable[[list[dict[str, Any]], dict[str, Any]], str | None]
"""`(messages, params) -> answer text`, or None to drop the row (a lost output row)."""


def openai_chat_signature(with_params: bool = True) -> Any:
    """The real stock OpenAI chat `ModelSignature` of the installed snowflake-ml-python."""
    from snowflake.ml.model import openai_signatures

    table = (
        openai_signatures.OPENAI_CHAT_WITH_PARAMS_SIGNATURE
        if with_params
        else openai_signatures.OPENAI_CHAT_SIGNATURE
    )
    return table["__call__"]


# -- other releases, read from their wheel without installing them -------------------------


class _SourceDefault:
    """A default value as written in source (`None`, `True`), shown verbatim."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def run_batch_signature_from_source(source: str) -> inspect.Signature:
    """`ModelVersion.run_batch`'s signature, parsed (not imported) from a module's source.

    Raises:
        LookupError: The source has no `ModelVersion.run_batch`.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "ModelVersion":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "run_batch":
                    return _signature_of(item.args)
    raise LookupError("no ModelVersion.run_batch in this source")


def _signature_of(args: ast.arguments) -> inspect.Signature:
    params: list[inspect.Parameter] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += list(args.defaults)
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if index < len(args.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append(_parameter(arg, kind, default))
    if args.vararg:
        params.append(inspect.Parameter(args.vararg.arg, inspect.Parameter.VAR_POSITIONAL))
    for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append(_parameter(arg, inspect.Parameter.KEYWORD_ONLY, kw_default))
    if args.kwarg:
        params.append(inspect.Parameter(args.kwarg.arg, inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def _parameter(arg: ast.arg, kind: Any, default: ast.expr | None) -> inspect.Parameter:
    return inspect.Parameter(
        arg.arg,
        kind,
        default=inspect.Parameter.empty
        if default is None
        else _SourceDefault(ast.unparse(default)),
        annotation=ast.unparse(arg.annotation) if arg.annotation else inspect.Parameter.empty,
    )


def _exec_module(name: str, source: str, origin: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = origin
    sys.modules[name] = module  # pydantic resolves annotations through sys.modules
    exec(compile(source, origin, "exec"), module.__dict__)  # noqa: S102 - a pinned wheel's file
    return module


def load_release_from_wheel(wheel: str | Path) -> tuple[inspect.Signature, SpecClasses]:
    """The real `run_batch` signature and spec classes of another snowflake-ml-python wheel.

    The signature is parsed with `ast`; the spec module (pure pydantic) and the
    `InferenceEngine` enum are executed from the wheel's own files, so the classes are the
    release's real ones, never a hand-written copy.
    """
    path = Path(wheel)
    tag = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    with zipfile.ZipFile(path) as archive:

        def read(member: str) -> str:
            return archive.read(member).decode()

        base = "snowflake/ml/model/"
        signature = run_batch_signature_from_source(
            read(base + "_client/model/model_version_impl.py")
        )
        names = archive.namelist()
        spec_file = next(
            f"{base}_client/model/{n}.py"
            for n in ("batch_inference_specs", "batch_inference_job_specs")
            if f"{base}_client/model/{n}.py" in names
        )
        engine = _exec_module(
            f"_medbatch_sf_{tag}_engine", read(base + "inference_engine.py"), f"{path}/engine"
        )
        spec_source = read(spec_file).replace(
            "from snowflake.ml.model import inference_engine as inference_engine_module",
            f"import _medbatch_sf_{tag}_engine as inference_engine_module",
        )
        specs = _exec_module(f"_medbatch_sf_{tag}_specs", spec_source, f"{path}/{spec_file}")
    return signature, SpecClasses.from_modules(specs, engine)


# -- session ---------------------------------------------------------------------------------


class _Rows:
    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def collect(self) -> list[Any]:
        return self._rows


class _CountingFile:
    def __init__(self, owner: FakeSession) -> None:
        self._owner = owner

    def put(self, local_file_name: str, stage_location: str, **kwargs: Any) -> Any:
        self._owner.calls["put"] += 1
        self._owner.put_kwargs.append(dict(kwargs))
        return self._owner.local.file.put(local_file_name, stage_location, **kwargs)

    def get(self, stage_location: str, target_directory: str, **kwargs: Any) -> Any:
        self._owner.calls["get"] += 1
        return self._owner.local.file.get(stage_location, target_directory, **kwargs)

    def put_stream(self, stream: Any, stage_location: str, **kwargs: Any) -> Any:
        self._owner.calls["put_stream"] += 1
        return self._owner.local.file.put_stream(stream, stage_location, **kwargs)


class FakeSession:
    """Snowpark local testing plus `LS` and stage DDL, with round-trip counters.

    Attributes:
        calls: Counts of `put`, `get`, `put_stream`, `ls`, `sql` (every statement).
        queries: Every SQL text received, in order.
    """

    def __init__(self, database: str = "MEDBATCH_DB", schema: str = "PUBLIC") -> None:
        from snowflake.snowpark import Session

        self.local = Session.builder.config("local_testing", True).create()
        self.database = database
        self.schema = schema
        self.calls: Counter[str] = Counter()
        self.queries: list[str] = []
        self.put_kwargs: list[dict[str, Any]] = []
        self.directory_stages: set[str] = set()
        self.file = _CountingFile(self)

    def create_dataframe(self, data: Any, schema: Any = None) -> Any:
        return self.local.create_dataframe(data, schema=schema)

    def table(self, name: str) -> Any:
        return self.local.table(name)

    def get_current_database(self) -> str:
        return f'"{self.database}"'

    def get_current_schema(self) -> str:
        return f'"{self.schema}"'

    def get_current_warehouse(self) -> str:
        return '"MEDBATCH_WH"'

    def _stage_dir(self, stage: str) -> Path | None:
        registry = self.local._conn.stage_registry._stage_registry
        entity = registry.get(stage)
        return Path(entity._working_directory) if entity is not None else None

    def stage_files(self, location: str) -> list[tuple[str, int, str]]:
        """`(path relative to the stage, size, md5)` of every file under `location`."""
        from snowflake.snowpark.mock._stage_registry import extract_stage_name_and_prefix

        stage, prefix = extract_stage_name_and_prefix(location)
        root = self._stage_dir(stage)
        if root is None:
            return []
        found = []
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root).as_posix()
            if path.is_file() and (not prefix or relative.startswith(prefix.rstrip("/") + "/")):
                data = path.read_bytes()
                found.append((relative, len(data), hashlib.md5(data).hexdigest()))  # noqa: S324
        return found

    def sql(self, query: str, params: Sequence[Any] | None = None) -> _Rows:
        from snowflake.snowpark import Row

        self.calls["sql"] += 1
        self.queries.append(query)
        text = query.strip()
        if match := re.fullmatch(r"LS\s+'?(@[^']+?)'?", text, flags=re.IGNORECASE):
            self.calls["ls"] += 1
            location = match.group(1)
            stage = location[1:].split("/", 1)[0]
            stage_name = stage.rsplit(".", 1)[-1].lower()
            return _Rows(
                [
                    Row(name=f"{stage_name}/{rel}", size=size, md5=md5, last_modified="")
                    for rel, size, md5 in self.stage_files(location)
                ]
            )
        if match := re.match(r"CREATE STAGE IF NOT EXISTS (\S+)", text, flags=re.IGNORECASE):
            if "DIRECTORY = (ENABLE = TRUE)" in text.upper():
                self.directory_stages.add(match.group(1))
            return _Rows([Row(status="Stage area successfully created.")])
        if match := re.fullmatch(r"DESC(?:RIBE)? STAGE (\S+)", text, flags=re.IGNORECASE):
            enabled = str(match.group(1) in self.directory_stages).lower()
            return _Rows(
                [Row(parent_property="DIRECTORY", property="ENABLE", property_value=enabled)]
            )
        if re.fullmatch(r"ALTER STAGE \S+ REFRESH", text, flags=re.IGNORECASE):
            self.calls["refresh"] += 1
            return _Rows([])
        raise NotImplementedError(f"FakeSession does not emulate: {query!r}")


# -- jobs and the model version -------------------------------------------------------------


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


def installed_run_batch_signature() -> inspect.Signature:
    """The installed `ModelVersion.run_batch` signature."""
    from snowflake.ml.model import ModelVersion

    return inspect.signature(ModelVersion.run_batch)


def _make_run_batch(signature: inspect.Signature) -> Callable[..., Any]:
    def run_batch(self: FakeModelVersion, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)  # TypeError, as the real call would
        return self._submit(bound.arguments)

    run_batch.__signature__ = signature  # type: ignore[attr-defined]
    return run_batch


class FakeModelVersion:
    """A `ModelVersion` whose `run_batch` checks the call and writes real-layout output.

    Args:
        session: The `FakeSession` whose stages receive the output.
        answer: `(messages, params) -> text` producing each row's answer.
        signature: The model function's `ModelSignature` (default: the stock OpenAI chat
            signature with params).
        run_batch_signature: The `run_batch` signature to bind to (default: installed).
        specs: The spec classes calls must use (default: installed).
        statuses: Status script of each submitted job.
        logs: Job log text.
        nested_output: Write `choices`/`usage` as nested parquet values instead of JSON text.
        omit_id_column: Drop our id column from the output (to test the loud failure).
        files_per_job: Output parquet files per job (as several workers write).
    """

    _signature: inspect.Signature

    def __new__(
        cls, *args: Any, run_batch_signature: inspect.Signature | None = None, **kwargs: Any
    ) -> FakeModelVersion:
        signature = run_batch_signature or installed_run_batch_signature()
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
        specs: SpecClasses | None = None,
        statuses: Sequence[Any] = ("PENDING", "RUNNING", "DONE"),
        logs: str = "vllm: model loaded\nbatch inference finished",
        nested_output: bool = False,
        omit_id_column: bool = False,
        files_per_job: int = 2,
    ) -> None:
        self.session = session
        self.answer = answer
        self.function_signature = signature or openai_chat_signature()
        self.specs = specs or SpecClasses.installed()
        self.statuses = list(statuses)
        self.logs = logs
        self.nested_output = nested_output
        self.omit_id_column = omit_id_column
        self.files_per_job = files_per_job
        self.calls: list[dict[str, Any]] = []
        self.jobs: dict[str, FakeJob] = {}

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
        for name, cls_name in (
            ("input_spec", "InputSpec"),
            ("output_spec", "OutputSpec"),
            ("job_spec", "JobSpec"),
            ("resources_spec", "ResourcesSpec"),
            ("inference_spec", "InferenceSpec"),
            ("image_build_spec", "ImageBuildSpec"),
        ):
            value = arguments.get(name)
            expected = getattr(self.specs, cls_name)
            if value is not None and not isinstance(value, expected):
                raise TypeError(f"{name} must be a real {cls_name}, got {type(value)!r}")

    def _validate_params(self, params: dict[str, Any] | None) -> None:
        from snowflake.ml.model._client.ops import param_utils

        param_utils.validate_params(params, self.function_signature.params)

    def _submit(self, arguments: dict[str, Any]) -> FakeJob:
        self.calls.append(arguments)
        api = detect_api(self._signature)
        self._check_specs(arguments)
        input_spec = arguments.get("input_spec")
        params = input_spec.params if input_spec is not None else None
        self._validate_params(params)
        frame = arguments["X"].to_pandas()
        output = arguments["output_spec"].stage_location.rstrip("/") + "/"
        if api == "1.x":
            job_spec = arguments.get("job_spec")
            job_name = (
                job_spec.job_name if job_spec else None
            ) or f"BATCH_INFERENCE_{uuid.uuid4().hex.upper()}"
            temporary, results = f"{output}_temporary/", output
        else:
            job_name = arguments.get("job_name") or f"BATCH_INFERENCE_{uuid.uuid4().hex.upper()}"
            temporary = f"{output}_snowflake_temporary/{uuid.uuid4().hex}/"
            results = f"{output}{job_name.rsplit('.', 1)[-1]}/"
        self._write_parquet(frame, f"{temporary}input.parquet")
        job_id = f"{self.session.database}.{self.session.schema}.{job_name.rsplit('.', 1)[-1]}"
        job = FakeJob(job_id, self.statuses, self.logs)
        self.jobs[job_id] = job
        if self.statuses[-1] == "DONE":
            self._write_output(frame, params or {}, results)
        return job

    def _write_output(self, frame: Any, params: dict[str, Any], results: str) -> None:
        import pandas as pd

        rows = []
        for index, row in enumerate(frame.to_dict("records")):
            messages = json.loads(row["MESSAGES"])
            text = self.answer(messages, params)
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
            usage = {
                "completion_tokens": len(text.split()),
                "prompt_tokens": 100,
                "total_tokens": 100 + len(text.split()),
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
    """A `FakeSession` and `FakeModelVersion` wired together, plus `get_job` for re-attach."""

    def __init__(self, answer: Answer, **model_version_options: Any) -> None:
        self.session = FakeSession()
        self.model_version = FakeModelVersion(self.session, answer, **model_version_options)
        self.reattached: list[str] = []

    def get_job(self, job_id: str, session: Any = None) -> FakeJob:
        """Look a job up by id, as `snowflake.ml.jobs.get_job` does."""
        self.reattached.append(job_id)
        return self.model_version.jobs[job_id]

    @property
    def run_batch_calls(self) -> int:
        """How many jobs were submitted."""
        return len(self.model_version.calls)


def sf127_wheel() -> Path | None:
    """The snowflake-ml-python 1.27.0 wheel fetched by `scripts/fetch_sf127.sh`, if present."""
    directory = Path(os.environ.get("MEDBATCH_SF127_DIR", ".cache/sf127"))
    wheels = sorted(directory.glob("snowflake_ml_python-1.27.0-*.whl"))
    return wheels[0] if wheels else None
