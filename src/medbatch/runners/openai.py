"""`OpenAICompatibleRunner`: any server that speaks `POST /v1/chat/completions`.

```
requests ──▶ encode images (threads) ──▶ semaphore(concurrency) ──▶ POST, retried by tenacity
   on 429 / 5xx / timeouts / dropped connections / malformed bodies, exponential backoff +
   jitter, `Retry-After` honoured ──▶ InferenceResponse (text, finish_reason, usage, label
   scores from logprobs) or a per-record `request_failed` error; the batch goes on.
```

`timeout_s` bounds each whole attempt (connecting, sending, waiting and reading the body),
not each read: a server that trickles a byte a second cannot hold a request open. After
`max_connection_failures` attempts in a row get no HTTP answer at all (refused, dropped or
timed out), the server is taken as down: the records still waiting fail at once with
`request_failed` (retryable) instead of each spending its retries, and `retry_failed`
sends them again once the server is back. The count restarts with every `run`.

The runner owns a private event loop in a daemon thread, so it works the same from a
script, a CLI, or a Jupyter notebook whose own loop is already running. Results stream:
each response is yielded as soon as it arrives, while the next requests are read ahead
(`batch_size` of them, default 4 × `concurrency`) so `concurrency` requests stay in flight
from the first to the last record.

The API key is read from the environment variable named by `api_key_env` (default
`OPENAI_API_KEY`), at start-up. It is never stored in the config, never logged, and never
part of `describe()` or of error messages.

Servers (`base_url` is what you would give the OpenAI SDK; `/chat/completions` is added):

```
server                   base_url                                       structured_outputs
vllm serve <model>       http://127.0.0.1:8000/v1                       "vllm", "response_format"
OpenAI                   https://api.openai.com/v1                      "response_format"
Azure OpenAI (v1 API)    https://<resource>.openai.azure.com/openai/v1  "response_format"
Ollama (ollama serve)    http://127.0.0.1:11434/v1                      "response_format"
LM Studio (server tab)   http://127.0.0.1:1234/v1                       "response_format"
```

Notes per server:
    - vLLM: `vllm serve google/medgemma-4b-it --max-model-len 8192 --limit-mm-per-prompt
      '{"image": 1}'` (no key unless `--api-key`). `structured_outputs="vllm"` sends
      `{"structured_outputs": {"choice": [...]}}`, so the answer is exactly a label name.
      Never the old `guided_choice`: vLLM >= 0.12 ignores it silently and the model
      free-generates. Label scores need `logprobs=True` (vLLM returns up to
      `--max-logprobs`, default 20).
    - OpenAI: key in `OPENAI_API_KEY`. Newer models (o-series, gpt-5) take
      `max_completion_tokens`: set `max_tokens_field="max_completion_tokens"`. `seed` is
      best effort there.
    - Azure OpenAI: `model` is the deployment name; set
      `api_key_env="AZURE_OPENAI_API_KEY"` and `api_key_header="api-key"` (an Entra token
      goes as `Authorization: Bearer`). Dated endpoints need
      `extra_query={"api-version": "..."}`.
    - Ollama (>= 0.5) and LM Studio: no key. They may ignore `seed` and return no
      `logprobs` (leave `logprobs=False`); `response_format` json_schema works with models
      that support structured output.
    - `structured_outputs="none"` sends no constraint: the pipeline then parses free text
      (and flags answers outside the labels).

The module holds the runner; its settings are `medbatch.runners._openai_config`
(re-exported here), the wire format (bodies, response mapping) `medbatch.openai_wire`,
the retry policy `medbatch.runners._openai_retry`, the event-loop thread
`medbatch.runners._event_loop`. `chat_completion_body`, `completion_to_response` and
`render_messages` are re-exported here, where they used to live.

Example:
    ```python
    runner = OpenAICompatibleRunner(base_url="http://127.0.0.1:8000/v1",
        model="google/medgemma-4b-it", structured_outputs="vllm")
    result = classify(dataset, get_task("ecg"), runner, constrained=True)
    ```
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import json
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from medbatch.errors import ImageLoadError
from medbatch.openai_wire import (
    RETRY_STATUSES,
    chat_completion_body,
    chat_url,
    completion_to_response,
    has_logprobs,
    has_message,
    public_url,
    render_messages,
    retry_after,
    status_may_pass_later,
)
from medbatch.profiles import ModelProfile, profile_for
from medbatch.records import ChatMessage, InferenceRequest, InferenceResponse
from medbatch.redaction import redact
from medbatch.runners._event_loop import LoopThread
from medbatch.runners._openai_config import OpenAICompatibleRunnerConfig
from medbatch.runners._openai_retry import (
    BackoffHonouringRetryAfter,
    ConnectionBreaker,
    FatalError,
    RetryableError,
    ServerDownError,
    log_retry,
)
from medbatch.runners.base import BatchRunner, RunnerCapabilities, RunnerConfig

__all__ = [
    "OpenAICompatibleRunner",
    "OpenAICompatibleRunnerConfig",
    "chat_completion_body",
    "completion_to_response",
    "render_messages",
]

logger = logging.getLogger(__name__)

_REASON_CHARS = 200
_DATA_URL_TEXT = re.compile(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+")


@dataclasses.dataclass(frozen=True)
class _Lost:
    """A request whose coroutine ended without an answer (cancelled, or a BaseException)."""

    record_id: str
    reason: str


def _report_lost(
    record_id: str,
    arrived: queue.SimpleQueue[InferenceResponse | _Lost],
    future: concurrent.futures.Future[None],
) -> None:
    # Normal completion has already put the answer; this only keeps `run` from waiting
    # for ever on a record whose coroutine was cancelled (the loop closed) or blew up.
    if future.cancelled():
        arrived.put(_Lost(record_id, "cancelled before it was answered"))
    elif (exc := future.exception()) is not None:
        arrived.put(_Lost(record_id, f"{type(exc).__name__}: {exc}"))


class OpenAICompatibleRunner(BatchRunner):
    """Classify through an OpenAI-compatible chat-completions server (see module docs).

    Args:
        config: The settings; None: the defaults plus `overrides`.
        transport: An httpx transport to use instead of the network (e.g.
            `httpx.MockTransport(handler)` in tests).
        sleep: The coroutine function waited on between retries (a seam for tests;
            default `asyncio.sleep`).
        profile: The model family's rules (the native image size images are shrunk to);
            default `profile_for(model)`.
        **overrides: Fields of `OpenAICompatibleRunnerConfig`, validated by it (e.g.
            `base_url=..., model=...`).

    Example:
        ```python
        with OpenAITestServer(latency_s=0.05) as server:
            runner = OpenAICompatibleRunner(base_url=server.base_url, model="test")
            responses = list(runner.run(requests))
        ```
    """

    name: ClassVar[str] = "openai"
    config_class: ClassVar[type[RunnerConfig] | None] = OpenAICompatibleRunnerConfig

    def __init__(
        self,
        config: OpenAICompatibleRunnerConfig | None = None,
        /,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        profile: ModelProfile | None = None,
        **overrides: Any,
    ) -> None:
        self.config: OpenAICompatibleRunnerConfig = self._settings(config, overrides)
        cfg = self.config
        self.model_id = cfg.model
        self.batch_size = cfg.batch_size or 4 * cfg.concurrency
        self.capabilities = RunnerCapabilities(
            batching=True,
            constrained_decoding=cfg.structured_outputs != "none",
            label_scores=True,
            image_inputs=frozenset({"bytes", "url"}),
            expensive=True,
        )
        self.url = chat_url(cfg.base_url)
        side = cfg.max_image_side
        self.profile: ModelProfile = profile or profile_for(cfg.model)
        self._max_side = self.profile.image_size if side is None else (side or None)
        self._transport = transport
        self._sleep = sleep or asyncio.sleep
        self._loop: LoopThread | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._idle: list[httpx.AsyncClient] = []
        self._semaphore: asyncio.Semaphore | None = None
        self._secret: str | None = None
        self._start_lock = threading.Lock()
        self._breaker = ConnectionBreaker(cfg.max_connection_failures)
        self._warned_no_logprobs = False

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Read the API key from the environment, open the connection pool. Idempotent."""
        with self._start_lock:
            if self._loop is not None:
                return
            cfg = self.config
            self._secret = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
            if cfg.api_key_env and not self._secret:
                logger.info(
                    "$%s is not set: requests carry no API key (fine for local servers)",
                    cfg.api_key_env,
                )
            self._loop = LoopThread()
            self._loop.call(self._open())

    async def _open(self) -> None:
        cfg = self.config
        headers = {"User-Agent": "medbatch", **cfg.extra_headers}
        if self._secret:
            if cfg.api_key_header == "api-key":
                headers["api-key"] = self._secret
            else:
                headers["Authorization"] = f"Bearer {self._secret}"
        # One single-connection client per concurrency slot: httpcore's shared pool scans
        # every connection on every request event (quadratic in `concurrency`), which costs
        # more CPU than the request itself at 16+ in flight.
        # One TLS context for all of them: loading the CA bundle costs ~80 ms each.
        tls = httpx.create_ssl_context()
        self._clients = [
            httpx.AsyncClient(
                verify=tls,
                headers=headers,
                params=cfg.extra_query or None,
                timeout=httpx.Timeout(cfg.timeout_s, connect=min(cfg.timeout_s, 30.0)),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                transport=self._transport,
            )
            for _ in range(cfg.concurrency)
        ]
        self._idle = list(self._clients)
        self._semaphore = asyncio.Semaphore(cfg.concurrency)

    async def _close_clients(self) -> None:
        clients, self._clients, self._idle = self._clients, [], []
        await asyncio.gather(*(client.aclose() for client in clients))

    def close(self) -> None:
        """Close connections and stop the private event loop. Idempotent."""
        with self._start_lock:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            loop.call(self._close_clients())
            loop.close()
            self._secret = None

    def describe(self) -> dict[str, Any]:
        """Runner facts for the manifest: the URL without credentials, never the key."""
        cfg = self.config
        return {
            **super().describe(),
            "base_url": public_url(cfg.base_url),
            "structured_outputs": cfg.structured_outputs,
            "concurrency": cfg.concurrency,
            "timeout_s": cfg.timeout_s,
            "max_retries": cfg.max_retries,
            "max_connection_failures": cfg.max_connection_failures,
            "api_key_env": cfg.api_key_env,
            "max_image_side": self._max_side,
            "logprobs": cfg.logprobs,
        }

    # -- one batch -------------------------------------------------------------------------

    def run(self, requests: Iterable[InferenceRequest]) -> Iterator[InferenceResponse]:
        """Answer every request exactly once, in order of arrival (see the class promises).

        Unlike the base class, the requests are not answered chunk by chunk: up to
        `batch_size` requests (never fewer than `concurrency`) are read ahead and handed
        to the event loop, and each answer read makes room for the next request, so the
        `concurrency` slots stay busy across what used to be chunk boundaries (a chunk
        drained before the next was sent left slots idle behind its slowest request).
        A server found down earlier is tried again.

        Raises:
            ValueError: Two requests share a record id (a caller bug, not a record failure).
        """
        self._breaker.reset()
        return self._stream(requests)

    def _stream(self, requests: Iterable[InferenceRequest]) -> Iterator[InferenceResponse]:
        self.start()
        loop = self._loop
        assert loop is not None
        window = max(self.batch_size or 4 * self.config.concurrency, self.config.concurrency)
        arrived: queue.SimpleQueue[InferenceResponse | _Lost] = queue.SimpleQueue()
        in_flight: dict[str, concurrent.futures.Future[None]] = {}
        seen_ids: set[str] = set()
        warned: set[str] = set()
        source = iter(requests)
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < window:
                    request = next(source, None)
                    if request is None:
                        exhausted = True
                        break
                    record_id = request.record_id
                    if record_id in seen_ids:
                        raise ValueError(f"duplicate request for record {record_id!r}")
                    seen_ids.add(record_id)
                    self._check_image_inputs(request, warned)
                    future = loop.submit(self._answer_one(request, arrived.put))
                    future.add_done_callback(functools.partial(_report_lost, record_id, arrived))
                    in_flight[record_id] = future
                if not in_flight:
                    return
                item = arrived.get()
                if in_flight.pop(item.record_id, None) is None:
                    continue  # a late `_Lost` for a record already answered
                if isinstance(item, _Lost):
                    yield InferenceResponse.failure(item.record_id, "runner_error", item.reason)
                else:
                    yield item
        finally:
            for future in in_flight.values():
                future.cancel()  # the consumer stopped early: stop sending requests

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        """One batch through the same pipe as `run` (kept for the `BatchRunner` contract)."""
        return self._stream(requests)

    async def _answer_one(
        self, request: InferenceRequest, put: Callable[[InferenceResponse], None]
    ) -> None:
        try:
            response = await self._answer(request)
        except Exception as exc:  # a bug or an odd body: fail this record, not the run
            logger.warning("record %s: %s: %s", request.record_id, type(exc).__name__, exc)
            response = InferenceResponse.failure(
                request.record_id, "request_failed", f"{type(exc).__name__}: {exc}"
            )
        put(response)

    async def _answer(self, request: InferenceRequest) -> InferenceResponse:
        record_id = request.record_id
        try:
            # Base64 of a large scan takes milliseconds of CPU: keep the loop responsive.
            messages = await asyncio.to_thread(self._render, request.messages)
        except ImageLoadError as exc:
            return InferenceResponse.failure(record_id, "image_error", str(exc), retryable=False)
        body = chat_completion_body(request, self.config, messages=messages)
        assert self._semaphore is not None
        async with self._semaphore:
            # The semaphore bounds requests in flight; a slot always has an idle client.
            client = self._idle.pop()
            started = time.perf_counter()
            try:
                payload, attempts = await self._post(client, record_id, body)
            except FatalError as exc:
                return InferenceResponse.failure(
                    record_id,
                    "request_failed",
                    exc.reason,
                    retryable=status_may_pass_later(exc.status),
                    latency_s=time.perf_counter() - started,
                    metadata={"status": exc.status},
                )
            except RetryableError as exc:
                return InferenceResponse.failure(
                    record_id,
                    "request_failed",
                    f"{exc.reason} (gave up after {self.config.max_retries + 1} attempts)",
                    latency_s=time.perf_counter() - started,
                    metadata={"status": exc.status} if exc.status else {},
                )
            except ServerDownError as exc:
                return InferenceResponse.failure(
                    record_id,
                    "request_failed",
                    str(exc),
                    latency_s=time.perf_counter() - started,
                    metadata={"server_down": True},
                )
            finally:
                self._idle.append(client)
            latency = time.perf_counter() - started
        response = self._response(request, payload, latency, attempts)
        if body.get("logprobs") and not has_logprobs(payload):
            self._no_logprobs(record_id)
            response = response.model_copy(
                update={"metadata": {**response.metadata, "logprobs_missing": True}}
            )
        return response

    def _no_logprobs(self, record_id: str) -> None:
        """The server ignored `logprobs`: say so once, and stop claiming label scores."""
        self.capabilities = self.capabilities.model_copy(update={"label_scores": False})
        if not self._warned_no_logprobs:
            self._warned_no_logprobs = True
            logger.warning(
                "%s returned no logprobs although they were asked for (record %s): this "
                "server does not support them, so label_scores stay empty",
                public_url(self.config.base_url),
                record_id,
            )

    def _render(self, messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
        return render_messages(messages, max_side=self._max_side)

    async def _post(
        self, client: httpx.AsyncClient, record_id: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], int]:
        """POST with retries; the parsed body and the number of attempts it took."""
        cfg = self.config
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.max_retries + 1),
            wait=BackoffHonouringRetryAfter(
                wait_exponential(multiplier=cfg.backoff_initial_s, max=cfg.backoff_max_s)
                + wait_random(0, cfg.jitter_s),
                cap_s=cfg.retry_after_max_s,
            ),
            retry=retry_if_exception_type(RetryableError),
            sleep=self._sleep,
            before_sleep=lambda state: log_retry(record_id, state, cfg.max_retries + 1),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if self._breaker.open:
                    raise ServerDownError(self._down_message())
                payload = await self._post_once(client, body)
            attempts = attempt.retry_state.attempt_number
        return payload, attempts

    def _down_message(self) -> str:
        return (
            f"not sent: {public_url(self.config.base_url)} gave no answer to "
            f"{self._breaker.limit} attempts in a row (server down or hung); run again with "
            "retry_failed once it is back"
        )

    def _no_answer(self, reason: str) -> RetryableError:
        if self._breaker.failed():
            logger.warning(
                "%s gave no answer to %d attempts in a row (down or hung; last: %s): the "
                "remaining records of this run fail without being sent. Run again with "
                "retry_failed once it is back",
                public_url(self.config.base_url),
                self._breaker.limit,
                reason,
            )
        return RetryableError(reason)

    async def _post_once(self, client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
        timeout = self.config.timeout_s
        try:
            # httpx's timeouts bound each read, so a server trickling bytes could hold the
            # request for ever: bound the whole exchange, body included.
            # (`wait_for`, not `asyncio.timeout`: that is Python 3.11+.)
            response = await asyncio.wait_for(client.post(self.url, json=body), timeout)
        except (asyncio.TimeoutError, TimeoutError, httpx.TimeoutException) as exc:
            # asyncio.TimeoutError is the builtin TimeoutError from 3.11 on, not on 3.10.
            reason = f"no answer within {timeout:g} s ({type(exc).__name__})"
            raise self._no_answer(reason) from exc
        except httpx.TransportError as exc:
            # Refused or dropped connections, and bodies cut short (RemoteProtocolError).
            raise self._no_answer(f"connection failed: {type(exc).__name__}") from exc
        self._breaker.answered()
        status = response.status_code
        if status >= 400:
            reason = f"HTTP {status} from {public_url(self.config.base_url)}: "
            reason += self._short_reason(response)
            if status in RETRY_STATUSES or status >= 500:
                raise RetryableError(reason, status=status, retry_after=retry_after(response))
            if status in (401, 403) and self.config.api_key_env:
                reason += f" (check the key in ${self.config.api_key_env})"
            raise FatalError(reason, status=status)
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RetryableError(f"HTTP {status} with a body that is not JSON") from exc
        if not has_message(payload):
            raise RetryableError(f"HTTP {status} with no choices[0].message in the body")
        assert isinstance(payload, dict)
        return payload

    def _short_reason(self, response: httpx.Response) -> str:
        """The server's error message, short, without image data or the key."""
        try:
            payload = response.json()
            error = payload.get("error") if isinstance(payload, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            text = str(message or payload)
        except ValueError:
            text = response.text
        text = _DATA_URL_TEXT.sub("data:…", " ".join(text.split()))
        if self._secret:
            text = text.replace(self._secret, "***")
        text = redact(text)  # before cutting: half a secret would no longer match
        if len(text) > _REASON_CHARS:
            text = text[: _REASON_CHARS - 1] + "…"
        return text or response.reason_phrase

    def _response(
        self, request: InferenceRequest, payload: dict[str, Any], latency: float, attempts: int
    ) -> InferenceResponse:
        return completion_to_response(
            request.record_id,
            payload,
            constraint=request.constraint,
            structured_outputs=self.config.structured_outputs,
            latency_s=latency,
            metadata={"attempts": attempts},
        )
