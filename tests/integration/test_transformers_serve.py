"""OpenAICompatibleRunner against a real third-party server: `transformers serve`.

The tiny random-weight Gemma 3 (`medbatch.testing.tiny_vlm`) is saved to a temporary folder
and served on 127.0.0.1 by `transformers serve <folder> --device cpu` (the `serve` extra,
`transformers[serving]`), started and stopped here. It is a real OpenAI-compatible server
that is not ours: it answers image chats, but ignores `response_format` and `logprobs`
(with a warning in its own log), which is what these tests are about. Its answers are
random words.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from medbatch import ListDataset, Record, classify, get_task
from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    LabelConstraint,
    TextPart,
)
from medbatch.runners.openai import OpenAICompatibleRunner
from medbatch.store import RunStore
from medbatch.testing.tiny_vlm import TINY_IMAGE_TOKENS

pytest.importorskip("torch", reason="the served model needs the local extra")
pytest.importorskip("fastapi", reason='transformers serve needs pip install "medbatch[serve]"')
pytest.importorskip("uvicorn", reason='transformers serve needs pip install "medbatch[serve]"')

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PARAMS = GenerationParams(max_tokens=6, temperature=0.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class ServedModel:
    """One `transformers serve` process on a free loopback port."""

    def __init__(self, model: Path, log: Path) -> None:
        self.model = model
        self.port = _free_port()
        self.log = log
        command = [
            sys.executable,
            "-c",
            "import sys; from transformers.cli.transformers import main; sys.exit(main())",
            "serve",
            str(model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--device",
            "cpu",
            "--log-level",
            "warning",
        ]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        with log.open("w") as sink:
            self.process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._wait_ready(timeout_s=240)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"transformers serve exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.kill()
        raise RuntimeError(f"transformers serve not ready: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """Stop the server at once (SIGKILL), as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def served(
    tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServedModel]:
    server = ServedModel(tiny_model_path, tmp_path_factory.mktemp("serve") / "server.log")
    try:
        yield server
    finally:
        server.kill()


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (64, 64), color)
    image.paste((255 - color[0], 128, color[2] // 2), (16, 16, 48, 48))
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _records(n: int) -> list[Record]:
    colors = [(255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (0, 200, 0), (90, 90, 90)]
    return [
        Record(id=f"r{i}", image=ImageRef.from_bytes(_png(colors[i % len(colors)])), label="NORMAL")
        for i in range(n)
    ]


def _runner(server: ServedModel, **settings: Any) -> OpenAICompatibleRunner:
    return OpenAICompatibleRunner(
        base_url=server.base_url, model=str(server.model), api_key_env=None, **settings
    )


def test_free_text_answers_and_the_image_reaches_the_model(served: ServedModel) -> None:
    text = "Classify this image."

    def request(record_id: str, color: tuple[int, int, int] | None) -> InferenceRequest:
        parts: list[TextPart | ImagePart] = [TextPart(text=text)]
        if color is not None:
            parts.append(ImagePart(image=ImageRef.from_bytes(_png(color))))
        return InferenceRequest(
            record_id=record_id,
            messages=(ChatMessage(role="user", content=tuple(parts)),),
            params=PARAMS,
        )

    with _runner(served, concurrency=2) as runner:
        responses = {
            r.record_id: r
            for r in runner.run(
                [request("red", (255, 0, 0)), request("blue", (0, 0, 255)), request("none", None)]
            )
        }
    for response in responses.values():
        assert response.ok, response.error
        assert response.text
        assert response.usage is not None
        assert response.usage.completion_tokens == PARAMS.max_tokens  # random words: no stop
    red, blue, none = (responses[k] for k in ("red", "blue", "none"))
    assert red.usage is not None
    assert none.usage is not None
    assert red.usage.prompt_tokens is not None
    assert none.usage.prompt_tokens is not None
    # The image became its soft tokens (plus its start and end markers) in the prompt...
    assert red.usage.prompt_tokens - none.usage.prompt_tokens >= TINY_IMAGE_TOKENS
    # ...and the model saw its pixels: same text, greedy decoding, other image, other answer.
    assert red.text != blue.text


def test_ignored_constraint_and_logprobs_are_flagged_and_warned_once(
    served: ServedModel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    runner = _runner(served, concurrency=2, logprobs=True)
    claimed_before = runner.capabilities.label_scores
    with runner:
        result = classify(
            ListDataset(_records(4)), get_task("ecg"), runner, constrained=True, params=PARAMS
        )
    frame = result.predictions
    assert len(frame) == 4
    assert (frame["status"] != "error").all()
    assert result.constraint_ignored == 4
    assert (
        (frame["status"] == "constraint_not_applied") | frame["method"].str.startswith("fallback:")
    ).all()
    assert frame["label_scores"].isna().all()
    assert claimed_before
    assert not runner.capabilities.label_scores
    messages = [r.getMessage() for r in caplog.records]
    assert sum("ignored the label constraint" in m for m in messages) == 1
    assert sum("returned no logprobs" in m for m in messages) == 1


def test_vllm_style_constraints_are_refused_and_not_retried(served: ServedModel) -> None:
    request = InferenceRequest(
        record_id="a",
        messages=(ChatMessage.text("user", "Classify."),),
        params=PARAMS,
        constraint=LabelConstraint(labels=("NORMAL", "POST_MI")),
    )
    with _runner(served, structured_outputs="vllm") as runner:
        (response,) = runner.run([request])
    assert response.error is not None
    assert response.error.kind == "request_failed"
    assert "HTTP 422" in response.error.message
    assert "structured_outputs" in response.error.message
    assert not response.error.retryable
    assert response.metadata["status"] == 422


class KillAfter(httpx.AsyncHTTPTransport):
    """The network transport; `kill` runs as the `nth` request is about to be sent."""

    def __init__(self, nth: int, kill: Any) -> None:
        super().__init__()
        self.sent = 0
        self.nth = nth
        self.kill = kill

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        if self.sent == self.nth:
            self.kill()  # before the request leaves: a timed kill raced fast answers
        return await super().handle_async_request(request)


def test_a_server_killed_mid_run_loses_nothing_and_retry_failed_completes(
    tiny_model_path: Path, tmp_path: Path, served: ServedModel
) -> None:
    records = _records(8)
    run_dir = tmp_path / "run"
    first = ServedModel(tiny_model_path, tmp_path / "first.log")
    try:
        # Two in flight: the 5th request is sent only once 3 are answered (a slot frees per
        # answer), and the server dies just as it is sent (a timed kill raced the tiny
        # model's fast answers and was flaky). The 4th may still be in flight then.
        transport = KillAfter(5, first.kill)
        runner = _runner(
            first, concurrency=2, batch_size=2, transport=transport, backoff_initial_s=0.1
        )
        with runner:
            broken = classify(
                ListDataset(records), get_task("ecg"), runner, store=run_dir, params=PARAMS
            )
    finally:
        first.kill()
    frame = broken.predictions
    assert sorted(frame["record_id"]) == [r.id for r in records]
    failed = frame[frame["status"] == "error"]
    assert set(failed["error_kind"]) == {"request_failed"}
    assert 4 <= len(failed) <= 5
    assert (frame["status"] != "error").sum() >= 3  # answered before the 5th was sent
    # Each record is written once: answered or errored, never both, never twice.
    lines = RunStore(run_dir).predictions_path.read_text().splitlines()
    written = Counter(json.loads(line)["record_id"] for line in lines if line.strip())
    assert written == dict.fromkeys(written, 1)
    assert set(written) == {r.id for r in records}

    # The server is back (the module's, serving the same model folder).
    transport = KillAfter(10**9, lambda: None)
    runner = _runner(served, concurrency=2, transport=transport)
    with runner:
        done = classify(
            ListDataset(records),
            get_task("ecg"),
            runner,
            store=run_dir,
            params=PARAMS,
            retry_failed=True,
        )
    assert transport.sent == len(failed)  # only the failed records were sent again
    assert sorted(done.predictions["record_id"]) == [r.id for r in records]
    assert (done.predictions["status"] != "error").all()
