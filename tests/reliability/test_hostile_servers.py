"""Hostile answers and servers, end to end through `medbatch run` (issue 17, items 6–8).

Each server here is a few lines of the standard library, written from the chat-completions
wire format, not from medbatch's own test server:
- a 2 MB answer, sent as a list of content parts, with its verdict at the very end: the
  parser reads only the tail, says so in `method`, and gets the label;
- a server that accepts connections and never answers: the run ends with every record a
  retryable error (`server_down`), after a few attempts, not after every record's retries;
  the exit code says that no record was answered.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from reliability_helpers import run_cli, write_config, write_ecg_folder

from medbatch.store import load_predictions

pytestmark = pytest.mark.slow

FILLER = "The tracing shows sinus rhythm with normal axis and no ST change. " * 32_000  # ~2 MB


class _LongAnswer(BaseHTTPRequestHandler):
    requests = 0

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        json.loads(self.rfile.read(length))
        type(self).requests += 1
        content = [
            {"type": "text", "text": FILLER},
            {"type": "text", "text": "\n\nFINAL CLASSIFICATION: POST_MI"},
        ]
        body = json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 400_000},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def long_answer_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LongAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hung_server() -> Iterator[str]:
    """Accepts every connection, reads nothing back, answers nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def _openai_config(tmp_path: Path, base_url: str, n: int, **settings: object) -> Path:
    write_ecg_folder(tmp_path / "images", n)
    return write_config(
        tmp_path / "run.toml",
        root=tmp_path / "images",
        output_dir=tmp_path / "out",
        runner={"kind": "openai", "base_url": base_url, "model": "m", **settings},
    )


def test_a_2mb_answer_in_content_parts_is_read_from_its_tail(
    tmp_path: Path, long_answer_server: str
) -> None:
    config = _openai_config(tmp_path, long_answer_server, 4, concurrency=2)
    done = run_cli("run", config, "--no-progress", "--skip-canary", timeout=180)
    assert done.returncode == 0, done.stderr
    frame = load_predictions(tmp_path / "out")
    assert len(frame) == 4
    assert (frame["label"] == "POST_MI").all()
    assert frame["method"].str.endswith("(last 32 KiB)").all()


def test_a_hung_server_ends_the_run_after_a_few_attempts(tmp_path: Path, hung_server: str) -> None:
    n = 40
    config = _openai_config(tmp_path, hung_server, n, concurrency=4, timeout_s=0.5, max_retries=4)
    done = run_cli("run", config, "--no-progress", "--skip-canary", timeout=120)
    # No record answered: exit 1 (not 0, and not 3, which means "some answered").
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    frame = load_predictions(tmp_path / "out")
    assert len(frame) == n
    assert (frame["status"] == "error").all()
    assert frame["retryable"].all()
    # Every record's own retries would be n × 5 = 200 half-second attempts; the breaker
    # gives up after a handful in a row and fails the rest at once.
    server_down = frame["metadata"].map(_server_down)
    assert server_down.sum() >= n // 2


def _server_down(metadata: object) -> bool:
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return isinstance(metadata, dict) and bool(metadata.get("server_down"))
