"""`OpenAITestServer`: a loopback OpenAI-compatible chat-completions server that misbehaves.

```python
with OpenAITestServer(latency_s=0.05, fault_rate=0.2, seed=1) as server:
    runner = OpenAICompatibleRunner(base_url=server.base_url, model="test")
    result = classify(dataset, task, runner)
server.requests_seen      # every request body, image bytes replaced by a digest
server.outcomes           # Counter: ok, 429, 500, timeout, garbage, truncated
```

What it does, per `POST /v1/chat/completions`:

```
request ──▶ count (refuse past max_requests) ──▶ record body ──▶ pick outcome ──▶ wait latency_s
   outcome: ok        → answer (answer fn / backend / default), constrained unless told to ignore
            "429"     → HTTP 429, `Retry-After: retry_after_s` when set
            "500" …   → that HTTP status (any 3-digit code)
            timeout   → no answer for `hang_s`, then the connection is dropped
            trickle   → HTTP 200 headers, then the body one byte every `trickle_s`
            garbage   → HTTP 200 whose body is not JSON
            truncated → HTTP 200 whose body stops half-way (Content-Length says more)
```

The fault schedule is deterministic: whether the k-th arrival of a given request body fails
(and how) depends only on `seed`, the body and k, not on the order concurrent requests
arrive in. `script` fixes the outcomes of the first arrivals instead, for exact tests.

Reading bodies and building answers (constraints, token counts, logprobs) is
`medbatch.testing._openai_api`; this module is the server and its fault schedule.

It listens on 127.0.0.1 only, on a free port, in daemon threads (`ThreadingHTTPServer`, so
many requests wait on `latency_s` at once), and stops by itself after `max_requests` requests
or `max_lifetime_s` seconds, or when the `with` block ends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from medbatch.records import (
    InferenceRequest,
    InferenceResponse,
)
from medbatch.runners.base import BatchRunner
from medbatch.testing._openai_api import (
    coerce,
    completion_json,
    error_json,
    read_constraint,
    redact_images,
    request_from_body,
    without_images,
)

if sys.version_info >= (3, 11):
    from typing import Self
else:  # Python 3.10
    from typing_extensions import Self

__all__ = ["DEFAULT_FAULTS", "AnswerFn", "BackendFn", "OpenAITestServer", "request_from_body"]

logger = logging.getLogger(__name__)

DEFAULT_FAULTS: tuple[str, ...] = ("429", "500", "timeout", "garbage", "truncated")
_SLOW_FAULTS = frozenset({"timeout", "trickle"})
"""Fault kinds drawn (uniformly) when a request is picked to fail."""

AnswerFn = Callable[[dict[str, Any]], str]
"""`answer(body) -> text`: the raw chat-completions body in, the answer text out."""

BackendFn = Callable[[InferenceRequest], "str | InferenceResponse"]
"""`fn(request) -> text | response`, like `FunctionRunner`'s function."""

_TOKEN_PATTERN = re.compile(r"\w+|\s+|[^\w\s]")


class OpenAITestServer:
    """A fault-injecting OpenAI-compatible chat-completions server on 127.0.0.1.

    Args:
        answer: `answer(body) -> text` for successful requests; gets the raw JSON body.
        latency_s: Seconds every request waits before it is answered (or fails).
        fault_rate: Probability that a request is answered with a fault instead.
        faults: The fault kinds to draw from: HTTP status codes as strings (`"429"`,
            `"500"`, `"503"`, …), `"timeout"`, `"garbage"`, `"truncated"`.
        seed: Seeds the fault schedule.
        max_requests: Requests served before the server refuses more and stops by itself.
        ignore_response_format: Answer free text even when the request asks for
            `response_format` / `structured_outputs` (a back-end that silently ignores
            constraints, for guardrail tests). Otherwise answers are coerced like a
            constrained decoder: to the label the text names, or the first label.
        backend: Produces answers from an `InferenceRequest` rebuilt from the body (images
            decoded): a `BatchRunner` (e.g. `TransformersRunner` on the tiny VLM; calls
            are serialised) or a `FunctionRunner`-style function.
        retry_after_s: Send `Retry-After` with this many seconds on 429 answers.
        hang_s: How long a `timeout` fault holds the connection before dropping it.
        trickle_s: Seconds between the bytes of a `trickle` answer (whose body is a
            complete, valid answer when it finally arrives).
        no_logprobs: Never return `logprobs`, even when asked (a server that ignores them).
        script: Outcomes of the first arrivals, in arrival order (`"ok"` or a fault kind);
            the random schedule applies after it.
        api_key: Require `Authorization: Bearer <api_key>` (or `api-key: <api_key>`);
            HTTP 401 otherwise.
        model: The model name reported in answers when the request names none.
        max_lifetime_s: The server stops itself after this long, whatever happens.
        drop_images: Silently drop image parts before answering (a server whose chat
            template or adapter loses images, for guardrail tests).

    Attributes:
        requests_seen: Every accepted request body, in arrival order, with image bytes
            replaced by a digest.
        outcomes: How many requests ended in each outcome (`ok`, `429`, `timeout`, …).
        peak_in_flight: The most requests handled at the same moment.
    """

    def __init__(
        self,
        answer: AnswerFn | None = None,
        *,
        latency_s: float = 0.0,
        fault_rate: float = 0.0,
        faults: Sequence[str] = DEFAULT_FAULTS,
        seed: int = 0,
        max_requests: int = 10_000,
        ignore_response_format: bool = False,
        backend: BatchRunner | BackendFn | None = None,
        retry_after_s: float | None = None,
        hang_s: float = 30.0,
        trickle_s: float = 1.0,
        no_logprobs: bool = False,
        script: Sequence[str] | None = None,
        api_key: str | None = None,
        model: str = "medbatch-test",
        max_lifetime_s: float = 600.0,
        drop_images: bool = False,
    ) -> None:
        if not 0.0 <= fault_rate <= 1.0:
            raise ValueError("fault_rate must be between 0 and 1")
        known = {"timeout", "trickle", "garbage", "truncated"}
        for fault in (*faults, *(script or ())):
            if fault not in known and fault != "ok" and not re.fullmatch(r"[1-5]\d\d", fault):
                raise ValueError(f"unknown fault {fault!r}: use an HTTP status or {sorted(known)}")
        if fault_rate > 0 and not faults:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        self.answer = answer
        self.latency_s = latency_s
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.seed = seed
        self.max_requests = max_requests
        self.ignore_response_format = ignore_response_format
        self.backend = backend
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.trickle_s = trickle_s
        self.no_logprobs = no_logprobs
        self.script = tuple(script or ())
        self.model = model
        self.max_lifetime_s = max_lifetime_s
        self.drop_images = drop_images
        self._api_key = api_key
        self.requests_seen: list[dict[str, Any]] = []
        self.outcomes: Counter[str] = Counter()
        self._arrivals: Counter[str] = Counter()
        self._count = 0
        self._in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self._backend_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`, the value for a client's `base_url`."""
        if self._httpd is None:
            raise RuntimeError("the server is not started; use it in a with block")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def request_count(self) -> int:
        """Requests received so far (refused ones included)."""
        return self._count

    def start(self) -> None:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._httpd is not None:
            return
        httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.max_lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        """Stop serving; hanging requests are released. Idempotent, callable from any thread."""
        self._stopping.set()
        with self._lock:
            httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- decisions -------------------------------------------------------------------------

    def _admit(self, body: dict[str, Any]) -> tuple[int, str] | None:
        """Count the request; its arrival index and outcome, or None past max_requests."""
        canonical = json.dumps(body, sort_keys=True).encode()
        key = hashlib.sha256(canonical).hexdigest()
        with self._lock:
            index = self._count
            self._count += 1
            if index >= self.max_requests:
                return None
            occurrence = self._arrivals[key]
            self._arrivals[key] += 1
            self.requests_seen.append(redact_images(body))
        if index < len(self.script):
            outcome = self.script[index]
        else:
            rng = random.Random(f"{self.seed}:{key}:{occurrence}")
            failing = self.fault_rate > 0 and rng.random() < self.fault_rate
            outcome = rng.choice(self.faults) if failing else "ok"
        with self._lock:
            self.outcomes[outcome] += 1
        if index + 1 >= self.max_requests:
            # The last allowed request: stop once it is answered (from another thread, as
            # shutdown() waits for the serving loop).
            threading.Thread(target=self._stop_after_answers, daemon=True).start()
        return index, outcome

    def _stop_after_answers(self) -> None:
        time.sleep(self.latency_s + 0.5)
        self.stop()

    def _authorised(self, headers: Mapping[str, str]) -> bool:
        if self._api_key is None:
            return True
        return headers.get("Authorization") == f"Bearer {self._api_key}" or (
            headers.get("api-key") == self._api_key
        )

    def _completion(self, body: dict[str, Any], index: int) -> dict[str, Any]:
        """The JSON of a successful answer."""
        if self.drop_images:
            body = without_images(body)
        constraint = read_constraint(body)
        text, finish_reason, from_model = self._answer_text(body, index)
        if constraint is not None and not self.ignore_response_format:
            text = coerce(text, constraint)
        tokens = _TOKEN_PATTERN.findall(text)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        # A backend model already honoured max_tokens in its own tokens; re-cutting its text
        # by this server's rough word tokens would change the answer.
        if not from_model and isinstance(max_tokens, int) and len(tokens) > max_tokens:
            tokens = tokens[:max_tokens]
            text = "".join(tokens)
            finish_reason = "length"
        return completion_json(
            body,
            text=text,
            finish_reason=finish_reason,
            tokens=tokens,
            logprobs=bool(body.get("logprobs")) and not self.no_logprobs,
            labels=constraint.labels if constraint is not None else (),
            index=index,
            model=self.model,
        )

    def _answer_text(self, body: dict[str, Any], index: int) -> tuple[str, str, bool]:
        """The answer, its finish reason, and whether a backend model produced it."""
        if self.answer is not None:
            return self.answer(body), "stop", False
        if self.backend is None:
            return "FINAL CLASSIFICATION: (test server answer)", "stop", False
        request = request_from_body(body, record_id=f"request-{index}")
        if isinstance(self.backend, BatchRunner):
            with self._backend_lock:
                response = next(iter(self.backend.run([request])))
        else:
            answer = self.backend(request)
            if isinstance(answer, str):
                return answer, "stop", False
            response = answer
        if response.error is not None:
            raise _BackendFailedError(str(response.error))
        return response.text or "", response.finish_reason or "stop", True


class _BackendFailedError(Exception):
    """The backend answered with an error: the server answers HTTP 500."""


class _Server(ThreadingHTTPServer):
    # Many clients connect at once (16+ concurrent requests); the default backlog of 5
    # would drop SYNs and add a one-second retransmit to some requests.
    request_queue_size = 256
    daemon_threads = True
    allow_reuse_address = True


def _make_handler(server: OpenAITestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
        timeout = 30  # idle keep-alive connections release their thread
        # Headers and body leave in one write (a buffered writer flushed per response) and
        # Nagle is off: otherwise a small body waits for the client's delayed ACK (40 ms).
        wbufsize = 1 << 16
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(200, {"object": "list", "data": [{"id": server.model}]})
            else:
                self._send_json(404, error_json("not found", "invalid_request_error"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, error_json(f"no route {self.path}", "invalid_request_error"))
                return
            if not server._authorised(dict(self.headers.items())):
                self._send_json(401, error_json("invalid API key", "authentication_error"))
                return
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self._send_json(
                    400, error_json(f"body is not JSON: {exc}", "invalid_request_error")
                )
                return
            admitted = server._admit(body)
            if admitted is None:
                self.close_connection = True
                self._send_json(503, error_json("request limit reached", "server_error"))
                return
            index, outcome = admitted
            with server._lock:
                server._in_flight += 1
                server.peak_in_flight = max(server.peak_in_flight, server._in_flight)
            try:
                if server.latency_s > 0 and server._stopping.wait(server.latency_s):
                    self.close_connection = True
                    return
                self._respond(body, index, outcome)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (its timeout)
            finally:
                with server._lock:
                    server._in_flight -= 1

        def _respond(self, body: dict[str, Any], index: int, outcome: str) -> None:
            if outcome == "ok":
                try:
                    payload = server._completion(body, index)
                except _BackendFailedError as exc:
                    self._send_json(500, error_json(f"backend failed: {exc}", "server_error"))
                    return
                self._send_json(200, payload)
            elif outcome == "timeout":
                server._stopping.wait(server.hang_s)
                self.close_connection = True
            elif outcome == "trickle":
                data = json.dumps(server._completion(body, index)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.flush()
                for offset in range(len(data)):
                    if server._stopping.wait(server.trickle_s):
                        break
                    self.wfile.write(data[offset : offset + 1])
                    self.wfile.flush()
                self.close_connection = True
            elif outcome == "garbage":
                self._send_raw(200, b'{"id": "chatcmpl-garbage", "choices": [{"mess')
            elif outcome == "truncated":
                data = json.dumps(server._completion(body, index)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
            else:
                status = int(outcome)
                headers = {}
                if status == 429 and server.retry_after_s is not None:
                    headers["Retry-After"] = f"{server.retry_after_s:g}"
                kind = "rate_limit_error" if status == 429 else "server_error"
                self._send_json(status, error_json(f"injected fault {status}", kind), headers)

        def _send_json(
            self, status: int, payload: Any, headers: Mapping[str, str] | None = None
        ) -> None:
            self._send_raw(status, json.dumps(payload).encode(), headers)

        def _send_raw(
            self, status: int, data: bytes, headers: Mapping[str, str] | None = None
        ) -> None:
            self.send_response(status, HTTPStatus(status).phrase if status in _KNOWN else None)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

    return Handler


_KNOWN = frozenset(status.value for status in HTTPStatus)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m medbatch.testing.openai_server`: serve until stopped, printing the URL.

    For benchmarks (the server in its own process, as a real one is) and manual tries with
    `curl`. Listens on 127.0.0.1 only and stops after `--max-requests` or `--lifetime`.
    """
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per request")
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--faults", default=",".join(DEFAULT_FAULTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--lifetime", type=float, default=600.0, help="stop after seconds")
    args = parser.parse_args(argv)
    server = OpenAITestServer(
        latency_s=args.latency,
        fault_rate=args.fault_rate,
        faults=tuple(f for f in args.faults.split(",") if f),
        seed=args.seed,
        max_requests=args.max_requests,
        max_lifetime_s=args.lifetime,
    )
    with server:
        print(server.base_url, flush=True)
        try:
            while not server._stopping.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
