"""The `BatchRunner` contract: answer inference requests, exactly once each.

Write your own by implementing `_run_batch`:

```python
class Echo(BatchRunner):
    model_id = "echo"
    def _run_batch(self, requests):
        return [InferenceResponse(record_id=r.record_id, text="NORMAL") for r in requests]
```
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from medbatch._validation import first_error
from medbatch.errors import ConfigError
from medbatch.profiles import ModelProfile
from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.redaction import check_env_var_name

if sys.version_info >= (3, 11):
    from typing import Self
else:  # Python 3.10
    from typing_extensions import Self

__all__ = ["BatchRunner", "RunnerCapabilities", "RunnerConfig"]

logger = logging.getLogger(__name__)


class RunnerCapabilities(BaseModel):
    """What a back-end can do; the pipeline, guardrails and `BatchRunner.run` read it.

    Each capability and where it is acted on (tests/unit/runners/test_capabilities.py
    fails when a capability is read nowhere and is not marked deprecated here):

    Attributes:
        batching: Deprecated, informational only: nothing in medbatch reads it (every
            runner is fed `batch_size` requests at a time whatever it says). Still
            accepted so existing runners validate; it will be removed.
        constrained_decoding: `LabelConstraint` is honoured natively. Read by `classify`
            (warns when a constraint is asked of a runner without it) and by the run loop
            (which sends the constraint only to a runner with it).
        label_scores: `InferenceResponse.label_scores` can be filled. Read by `classify`
            (warns when log-probabilities are asked of a runner without it); the OpenAI
            runner clears it when its server ignores `logprobs`.
        likelihood_scoring: `LabelConstraint(mode="score")` is honoured: the answer is the
            argmax of exact label scores, computed without generating. Read by `classify`,
            which refuses score mode on a runner without it.
        image_inputs: How images can reach the model: `bytes` (a local file or in-memory
            bytes, read and sent by the runner), `url` (http/data URLs passed through),
            `stage` (Snowflake stage paths passed by reference). Read by `BatchRunner.run`,
            which logs one warning per run and kind for a request carrying an image of a
            kind the runner did not declare (the record then usually fails with
            `image_error`). No runner picks its transport from it: where there is a choice
            it is a setting (vLLM's `image_transport`, which also needs
            `allowed_local_media_path`); the OpenAI runner has none (files go inline as
            data URLs, URLs pass through).
        expensive: Each run costs real money or GPU time (remote jobs, servers, engines),
            so `classify` runs a canary subset first by default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    batching: bool = False
    constrained_decoding: bool = False
    label_scores: bool = False
    likelihood_scoring: bool = False
    image_inputs: frozenset[str] = frozenset({"bytes"})
    expensive: bool = False


class RunnerConfig(BaseModel):
    """Base of every runner's settings (`[runner]` table of a run config).

    Subclasses add their fields, each with `Field(description=...)`, so the CLI and the docs
    can render them.
    """

    # Settings may hold credentials by mistake (a key pasted into `api_key_env`): a
    # validation error must not repeat the value.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @model_validator(mode="after")
    def _env_settings_name_variables(self) -> Self:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name.endswith("_env") and isinstance(value, str):
                check_env_var_name(value, name)
        return self


class BatchRunner(ABC):
    """Runs inference requests on some back-end.

    Promises (enforced here, in `run`, not by each back-end):
        - Every request is answered by exactly one `InferenceResponse` with its `record_id`,
          in any order. A response the back-end never produced becomes
          `RecordError(kind="missing_response")`; a second response for the same id is
          dropped with a warning; a response for an id that was not asked is dropped.
        - A back-end exception fails only the batch it happened in: each unanswered request
          of that batch becomes `RecordError(kind="runner_error")` and the run goes on.
        - Responses stream: batch *k* is answered before batch *k+1* is read from the input,
          so results can be stored as they arrive and memory stays flat.

    Subclasses implement `_run_batch` (one chunk of `batch_size` requests, or the whole
    stream when `batch_size` is None) and may override `start`/`close` for engines and
    servers. Runners are context managers.

    Settings: a runner's pydantic `<Runner>Config` (`config_class`) is the only list of its
    settings. Every built-in runner is constructed as
    `Runner(config: <Runner>Config | None = None, /, **overrides)`: the overrides are
    fields of that config, validated by it (`_settings`), so an unknown key is a one-line
    `ConfigError` with a did-you-mean, as in a `[runner]` table. Objects that are not
    settings (an engine, a transport, a session, a clock, the model profile) are extra
    keyword-only arguments. A runner whose model names itself may take the model as the
    positional shorthand instead of a config (`TransformersRunner("google/medgemma-4b-it")`).

    Attributes:
        model_id: Identifies the model (and revision) in results and resume keys.
        batch_size: Requests per `_run_batch` call; None means all at once.
        capabilities: What the back-end supports.
        profile: The model family's rules (see `medbatch.profiles`), or None.
    """

    model_id: str = "unknown"
    batch_size: int | None = 8
    capabilities: RunnerCapabilities = RunnerCapabilities()
    profile: ModelProfile | None = None
    """The model family's rules this runner applies, resolved once (`profile_for`) when the
    runner knows its model; None: the pipeline resolves it from `model_id`."""
    name: ClassVar[str] = "runner"
    """Registry key of this runner kind (e.g. `transformers`)."""
    config_class: ClassVar[type[RunnerConfig] | None] = None
    """The pydantic settings class `from_config` accepts."""
    state_listener: Callable[[dict[str, Any]], None] | None = None
    """Set by the pipeline: call `_notify_state()` when `state()` changes (e.g. a job was
    submitted) so the run manifest records it at once."""

    @classmethod
    def from_config(cls, config: RunnerConfig) -> Self:
        """Build the runner from its settings object (used by the CLI and `RunConfig`).

        The fields go in as keyword arguments, which every built-in runner validates back
        into its config (see the class docs) and which a plug-in runner with a plain
        keyword constructor also accepts.

        Raises:
            ConfigError: `config` is not this runner's `config_class`.
        """
        expected = cls.config_class
        if expected is not None and not isinstance(config, expected):
            raise ConfigError(
                f"{cls.__name__} needs a {expected.__name__}, not {type(config).__name__}"
            )
        return cls(**config.model_dump())

    @classmethod
    def _settings(cls, config: RunnerConfig | None, overrides: Mapping[str, Any]) -> Any:
        """The validated `config_class` instance: `config` (or the defaults) plus `overrides`.

        This is the one place that turns constructor arguments into settings, so
        `Runner(config)`, `Runner(**fields)` and `Runner(config, **some_fields)` obey the
        same rules as a `[runner]` table.

        Raises:
            ConfigError: An unknown key (with a did-you-mean) or an invalid value, on one line.
        """
        config_cls = cls.config_class
        if config_cls is None:
            raise ConfigError(f"{cls.__name__} has no config class")
        if config is not None and not isinstance(config, config_cls):
            raise ConfigError(
                f"{cls.__name__} needs a {config_cls.__name__}, not {type(config).__name__}"
            )
        if config is not None and not overrides:
            return config
        values = config.model_dump() if config is not None else {}
        values.update(overrides)
        try:
            return config_cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(f"{cls.__name__}: {first_error(exc, config_cls)}") from exc

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:  # noqa: B027 - optional hook, most runners need no start-up
        """Load the engine, open connections. Called by `__enter__`; idempotent."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the engine and connections. Called by `__exit__`; idempotent."""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- provenance ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Facts about this runner for the run manifest. Never include secrets."""
        return {"runner": self.name, "model_id": self.model_id}

    def plan(self, n_records: int) -> dict[str, str]:
        """What running `n_records` would involve (jobs, replicas, ...), for `medbatch validate`.

        Reads settings only: nothing is started, submitted or loaded. Empty by default;
        a back-end with something to plan (remote jobs) overrides it.

        Args:
            n_records: The records the run would send.

        Returns:
            Rows of the plan, name to value, in display order.
        """
        return {}

    def state(self) -> dict[str, Any]:
        """Resumable state to persist in the run manifest (e.g. a remote job's name)."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Take back the `state()` of an interrupted run, e.g. to re-attach to its job."""

    def _notify_state(self) -> None:
        """Tell the pipeline that `state()` changed, so it is persisted right away."""
        if self.state_listener is not None:
            self.state_listener(self.state())

    # -- the contract ----------------------------------------------------------------------

    @abstractmethod
    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        """Answer one batch of requests.

        Args:
            requests: At most `batch_size` requests with distinct record ids.

        Returns:
            Responses in any order, lazily if convenient. Per-record failures should be
            `InferenceResponse.failure(...)` values; raising fails the whole batch.
        """

    def run(self, requests: Iterable[InferenceRequest]) -> Iterator[InferenceResponse]:
        """Answer every request exactly once (see the class promises).

        Args:
            requests: Requests with unique record ids; consumed lazily, batch by batch.

        Yields:
            One response per request, errors included.

        Raises:
            ValueError: Two requests share a record id (a caller bug, not a record failure).
        """
        seen_ids: set[str] = set()
        warned: set[str] = set()
        for batch in _chunks(requests, self.batch_size):
            for request in batch:
                if request.record_id in seen_ids:
                    raise ValueError(f"duplicate request for record {request.record_id!r}")
                seen_ids.add(request.record_id)
                self._check_image_inputs(request, warned)
            yield from self._answer_batch(batch)

    def _check_image_inputs(self, request: InferenceRequest, warned: set[str]) -> None:
        """Warn once per run and kind about an image the runner did not declare it takes."""
        accepted = self.capabilities.image_inputs
        for image in request.images:
            kind = _IMAGE_INPUT[image.kind]
            if kind not in accepted and kind not in warned:
                warned.add(kind)
                logger.warning(
                    "%s takes images as %s, but record %r has a %s image: such records "
                    "will probably fail with image_error",
                    self.name,
                    ", ".join(sorted(accepted)) or "nothing",
                    request.record_id,
                    kind,
                )

    def _answer_batch(self, batch: Sequence[InferenceRequest]) -> Iterator[InferenceResponse]:
        pending = {request.record_id: request for request in batch}
        started = time.perf_counter()
        try:
            for response in self._run_batch(batch):
                if response.record_id not in pending:
                    logger.warning(
                        "%s answered record %r twice or without being asked; answer dropped",
                        self.name,
                        response.record_id,
                    )
                    continue
                del pending[response.record_id]
                yield response
        except Exception as exc:
            logger.warning("%s failed on a batch of %d: %s", self.name, len(batch), exc)
            message = f"{type(exc).__name__}: {exc}"
            for record_id in list(pending):
                del pending[record_id]
                yield InferenceResponse.failure(
                    record_id,
                    "runner_error",
                    message,
                    latency_s=time.perf_counter() - started,
                )
        for record_id in pending:
            yield InferenceResponse.failure(
                record_id,
                "missing_response",
                f"{self.name} returned no answer for this record",
            )


# `ImageRef.kind` -> the `RunnerCapabilities.image_inputs` name a runner declares for it.
_IMAGE_INPUT = {"path": "bytes", "bytes": "bytes", "url": "url", "stage": "stage"}


def _chunks(
    items: Iterable[InferenceRequest], size: int | None
) -> Iterator[list[InferenceRequest]]:
    iterator = iter(items)
    if size is None:
        whole = list(iterator)
        if whole:
            yield whole
        return
    if size <= 0:
        raise ValueError("batch_size must be positive or None")
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
