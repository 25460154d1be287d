"""`RayRunner`: spread a run over a Ray cluster, one inner runner per actor.

Needs the `ray` extra (`pip install "medbatch[ray]"`); Ray is imported on `start`.

```
driver (pipeline, store)                 Ray cluster
  requests ── batches of batch_size ──▶  actor 0: TransformersRunner (num_gpus=1)
  store ◀── answers, in completion order  actor 1: TransformersRunner (num_gpus=1)
                                          ...     (num_actors actors)
```

Each actor builds its own runner once, from the `[runner.inner]` table (or a picklable
factory), and answers whole batches with that runner's `run()`. Requests travel with their
images as bytes or paths (never decoded pixels); a path must be readable on every node.

Why a plain actor pool and not `ray.data.Dataset.map_batches`: Ray Data retries or aborts
the whole dataset when an actor dies, and its output rows carry no link back to the batch
that was lost. Here each batch is one actor call, so a dead actor fails exactly the records
of the batches queued on it (at most `max_batches_in_flight`, one of them possibly answered
but not yet sent back), as retryable `RecordError(kind="runner_error")` values, and the run
goes on; Ray rebuilds the actor (`max_restarts`) for the next batches. `BatchRunner` still
enforces one answer per record, and `classify(..., retry_failed=True)` runs the failed ones
again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medbatch._validation import first_error
from medbatch.errors import ConfigError, MissingDependencyError, RunnerError
from medbatch.records import InferenceRequest, InferenceResponse
from medbatch.registry import RUNNERS
from medbatch.runners.base import BatchRunner, RunnerConfig, _chunks

__all__ = ["InnerRunnerSpec", "RayRunner", "RayRunnerConfig"]

logger = logging.getLogger(__name__)

RunnerFactory = Callable[[], BatchRunner]


class InnerRunnerSpec(BaseModel):
    """`[runner.inner]`: the runner every actor holds, as `kind` plus that runner's settings.

    The settings are checked against the inner kind's `<Class>Config` when the Ray runner's
    config is validated, so a typo fails on the driver, not on every actor.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: str = Field(description="Runner registry name of the inner runner, e.g. 'vllm'.")

    def options(self) -> dict[str, Any]:
        """The keys other than `kind`."""
        return dict(self.model_extra or {})

    def settings(self) -> RunnerConfig:
        """The inner runner's validated `<Class>Config`.

        Raises:
            ConfigError: Unknown kind, a kind without a config, nesting `ray`, or bad settings.
        """
        if self.kind == RayRunner.name:
            raise ConfigError("[runner.inner] cannot itself be a 'ray' runner")
        runner_cls = RUNNERS.get(self.kind)
        config_cls: type[RunnerConfig] | None = getattr(runner_cls, "config_class", None)
        if config_cls is None:
            raise ConfigError(f"[runner.inner] runner {self.kind!r} cannot be built from a config")
        try:
            return config_cls.model_validate(self.options())
        except ValidationError as exc:
            raise ConfigError(
                f"[runner.inner] {self.kind}: {first_error(exc, config_cls)}"
            ) from exc

    def build(self) -> BatchRunner:
        """A new, not yet started inner runner."""
        runner: BatchRunner = RUNNERS.get(self.kind).from_config(self.settings())
        return runner


class RayRunnerConfig(RunnerConfig):
    """Settings of `RayRunner` (`[runner] kind = "ray"` with a nested `[runner.inner]`).

    ```toml
    [runner]
    kind = "ray"
    num_actors = 4
    num_gpus = 1

    [runner.inner]
    kind = "vllm"
    model = "google/medgemma-4b-it"
    ```
    """

    inner: InnerRunnerSpec | None = Field(
        default=None,
        description=(
            "The runner each actor holds: a `[runner.inner]` table with `kind` and that "
            "runner's settings. Required unless a `factory` is passed in Python."
        ),
    )
    num_actors: int = Field(default=2, ge=1, description="Actors, each with its own runner.")
    num_gpus: float = Field(
        default=0, ge=0, description="GPUs reserved per actor (1 for one model copy per GPU)."
    )
    num_cpus: float = Field(default=1, ge=0, description="CPUs reserved per actor.")
    batch_size: int = Field(default=8, ge=1, description="Requests sent to an actor at once.")
    max_batches_in_flight: int = Field(
        default=2,
        ge=1,
        description="Batches queued per actor, so an actor never waits for the driver.",
    )
    max_restarts: int = Field(
        default=1,
        ge=0,
        description=(
            "Times Ray rebuilds a crashed actor. The batch it held fails (retryable); the "
            "actor answers later batches."
        ),
    )
    restart_timeout_s: float = Field(
        default=900,
        gt=0,
        description="Longest wait for a crashed actor to be rebuilt (its runner reloaded).",
    )
    address: str | None = Field(
        default=None,
        description=(
            "Ray cluster to join ('auto', 'ray://host:10001'); None joins the cluster this "
            "process already belongs to, or starts a local one."
        ),
    )

    @model_validator(mode="after")
    def _inner_settings_are_valid(self) -> RayRunnerConfig:
        if self.inner is not None:
            self.inner.settings()
        return self


class _RunnerActor:
    """Body of one Ray actor: builds its runner once, then answers batches."""

    def __init__(self, factory: RunnerFactory) -> None:
        self.runner = factory()
        self.runner.start()

    def ready(self) -> str:
        return self.runner.model_id

    def answer(self, requests: list[InferenceRequest]) -> list[InferenceResponse]:
        # The inner runner's own `run()` keeps the exactly-once promise inside the batch.
        return list(self.runner.run(requests))

    def close(self) -> None:
        self.runner.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingDependencyError("RayRunner", "ray", "ray") from exc
    return ray


class RayRunner(BatchRunner):
    """Answers requests on a pool of Ray actors, each holding its own runner.

    Args:
        config: The settings; None uses the defaults.
        factory: Instead of `config.inner`: a picklable callable returning a new, not
            started runner (called once on the driver to read `model_id`, then once in each
            actor).
        **overrides: Fields of `RayRunnerConfig` replacing those of `config`.

    Raises:
        ConfigError: Neither or both of `inner` and `factory`, or invalid settings.

    Answers come back in order of completion, as each batch finishes; at most
    `num_actors * max_batches_in_flight` batches are read ahead of the answers.

    Example (TOML: `[runner] kind = "ray"` with a `[runner.inner]` table; Ray starts in
    `start`, not here):
        >>> from functools import partial
        >>> from medbatch.testing import FunctionRunner
        >>> runner = RayRunner(factory=partial(FunctionRunner, str), num_actors=4, num_gpus=1)
        >>> runner.model_id, runner.config.num_actors
        ('function', 4)
    """

    name = "ray"
    config_class = RayRunnerConfig

    def __init__(
        self,
        config: RayRunnerConfig | None = None,
        /,
        *,
        factory: RunnerFactory | None = None,
        **overrides: Any,
    ) -> None:
        self.config: RayRunnerConfig = self._settings(config, overrides)
        if (factory is None) == (self.config.inner is None):
            raise ConfigError("RayRunner needs exactly one of `inner` (a runner spec) or `factory`")
        if factory is None:
            assert self.config.inner is not None
            factory = self.config.inner.build
        self._factory: RunnerFactory = factory
        # Built, never started, on the driver: constructors are cheap by convention (the model
        # loads in `start`), and the pipeline needs `model_id` before anything starts.
        template = self._factory()
        self._inner_description = template.describe()
        self.model_id = template.model_id
        self.capabilities = template.capabilities.model_copy(update={"batching": True})
        self.batch_size = self.config.batch_size
        self._ray: Any = None
        self._owns_ray = False
        self._actors: list[Any] = []
        self._deaths: list[int] = []
        self._generation: list[int] = []
        self._submitted: dict[tuple[str, ...], tuple[Any, int, int]] = {}

    def describe(self) -> dict[str, Any]:
        """Runner facts for the manifest, the inner runner's included."""
        return {
            **super().describe(),
            "inner": self._inner_description,
            "num_actors": self.config.num_actors,
            "num_gpus": self.config.num_gpus,
        }

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Join or start the Ray cluster and build the actors (each loads its runner).

        Raises:
            MissingDependencyError: Ray is not installed.
            RunnerError: An actor could not build or start its runner.
        """
        if self._actors:
            return
        ray = _import_ray()
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=self.config.address, include_dashboard=False, log_to_driver=False)
            self._owns_ray = True
        cfg = self.config
        actor_cls = ray.remote(_RunnerActor).options(
            num_cpus=cfg.num_cpus,
            num_gpus=cfg.num_gpus,
            max_restarts=cfg.max_restarts,
            max_task_retries=0,  # a lost batch becomes retryable errors, never a silent rerun
        )
        actors = [actor_cls.remote(self._factory) for _ in range(cfg.num_actors)]
        try:
            ray.get([actor.ready.remote() for actor in actors])
        except ray.exceptions.RayError as exc:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            self._shutdown_ray()
            raise RunnerError(f"RayRunner: an actor could not start its runner: {exc}") from exc
        self._actors = actors
        self._deaths = [0] * len(actors)
        self._generation = [0] * len(actors)

    def close(self) -> None:
        """Close every actor's runner, end the actors, and stop a cluster started here."""
        ray = self._ray
        if ray is None:
            return
        actors, self._actors = self._actors, []
        for actor in actors:
            try:
                ray.get(actor.close.remote(), timeout=60)
            except ray.exceptions.RayError as exc:  # a dead actor has nothing left to close
                logger.debug("RayRunner: actor close failed: %s", exc)
            ray.kill(actor, no_restart=True)
        self._submitted.clear()
        self._shutdown_ray()

    def _shutdown_ray(self) -> None:
        if self._owns_ray and self._ray is not None:
            self._ray.shutdown()
        self._owns_ray = False
        self._ray = None

    # -- answering -------------------------------------------------------------------------

    def run(self, requests: Iterable[InferenceRequest]) -> Iterator[InferenceResponse]:
        """Answer every request exactly once, batches spread over the actors.

        Same promises as `BatchRunner.run`, except that several batches are in flight at
        once and answers stream back in order of completion.
        """
        self.start()
        ray = self._ray
        seen_ids: set[str] = set()
        chunks = _chunks(requests, self.batch_size)
        in_flight: dict[Any, tuple[list[InferenceRequest], int, int]] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < self._capacity():
                    batch = next(chunks, None)
                    if batch is None:
                        exhausted = True
                        break
                    for request in batch:
                        if request.record_id in seen_ids:
                            raise ValueError(f"duplicate request for record {request.record_id!r}")
                        seen_ids.add(request.record_id)
                    index = self._pick_actor(in_flight)
                    ref = self._actors[index].answer.remote(batch)
                    in_flight[ref] = (batch, index, self._generation[index])
                if not in_flight:
                    if exhausted:
                        return
                    # No actor left alive: fail what remains instead of waiting forever.
                    batch = next(chunks, None)
                    if batch is None:
                        return
                    self._submitted[_key(batch)] = (None, -1, 0)
                    yield from self._answer_batch(batch)
                    continue
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    batch, index, generation = in_flight.pop(ref)
                    self._submitted[_key(batch)] = (ref, index, generation)
                    yield from self._answer_batch(batch)
        finally:
            self._submitted.clear()

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        # `run` submits batches itself and hands finished ones over here, so the base class
        # checks their answers; a direct call answers the batch on the first live actor.
        submitted = self._submitted.pop(_key(requests), None)
        if submitted is None:
            self.start()
            index = self._pick_actor({})
            ref = self._actors[index].answer.remote(list(requests))
            submitted = (ref, index, self._generation[index])
        ref, index, generation = submitted
        if ref is None:
            raise RunnerError("every Ray actor has died; no actor left to answer this batch")
        ray = self._ray
        try:
            answers: list[InferenceResponse] = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            # Every batch queued on a dead actor fails with it; count the death only once.
            if generation == self._generation[index]:
                self._generation[index] += 1
                self._deaths[index] += 1
                self._await_rebuild(index)
            raise RunnerError(
                f"Ray actor {index} died while answering this batch "
                f"(death {self._deaths[index]} of at most {self.config.max_restarts + 1})"
            ) from exc
        return answers

    def _await_rebuild(self, index: int) -> None:
        """Wait until Ray has rebuilt actor `index`, or mark it dead for good.

        Ray fails (rather than queues) calls sent to an actor while it restarts, so sending
        the next batches at once would lose them too.
        """
        if index not in self._live_actors():
            return
        ray = self._ray
        deadline = time.monotonic() + self.config.restart_timeout_s
        while True:
            try:
                ray.get(self._actors[index].ready.remote())
                return
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            except ray.exceptions.RayActorError:
                break
        logger.warning("RayRunner: actor %d could not be rebuilt; continuing without it", index)
        self._deaths[index] = self.config.max_restarts + 1

    def _live_actors(self) -> list[int]:
        limit = self.config.max_restarts + 1
        return [i for i, deaths in enumerate(self._deaths) if deaths < limit]

    def _capacity(self) -> int:
        return len(self._live_actors()) * self.config.max_batches_in_flight

    def _pick_actor(self, in_flight: dict[Any, tuple[list[InferenceRequest], int, int]]) -> int:
        live = self._live_actors()
        if not live:
            raise RunnerError("every Ray actor has died")
        load = dict.fromkeys(live, 0)
        for _, index, _ in in_flight.values():
            if index in load:
                load[index] += 1
        return min(live, key=lambda i: load[i])


def _key(requests: Sequence[InferenceRequest]) -> tuple[str, ...]:
    return tuple(request.record_id for request in requests)
