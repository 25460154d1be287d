"""Credentials never reach a file of the run, a log line or a `--debug` traceback.

Promises checked (issue 17, item 3):
- a password in the URL's user-info, a key in `extra_query`, the API key itself, all
  echoed back by a server in its error bodies (as OpenAI-compatible servers and proxies
  do: the request line, the Authorization header), appear in no file of the run directory
  (manifest, JSONL, parquet, report, metrics) and in no output line at `--verbose` or
  `--debug`; what is redacted still says what happened (the HTTP status, the host);
- a key pasted into `api_key_env` (which names a variable) is refused before anything is
  written, and the refusal does not repeat it;
- `--debug` prints chained tracebacks (a connector error under ours) with connection
  secrets scrubbed, and so does an error no command handled;
- in library use, httpx's own request log line (at INFO) carries no user-info or key.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from reliability_helpers import cli_env, every_file, run_cli, write_config, write_ecg_folder

from medbatch.redaction import redact

USER = "svc-reader"
URL_PASSWORD = "urlpass-SECRET-31f9"
QUERY_KEY = "querykey-SECRET-77ab"
API_KEY = "sk-apikey-SECRET-0c4e5d"
PASTED_KEY = "sk-pasted-SECRET-9f8e7d6c5b"
SNOWFLAKE_PASSWORD = "sf-conn-SECRET-a1b2"
SECRETS = {
    "url password": URL_PASSWORD,
    "query key": QUERY_KEY,
    "api key": API_KEY,
    "pasted key": PASTED_KEY,
    "basic auth": base64.b64encode(f"{USER}:{URL_PASSWORD}".encode()).decode(),
    "snowflake password": SNOWFLAKE_PASSWORD,
}


def _assert_clean(where: str, data: bytes) -> None:
    for name, value in SECRETS.items():
        assert value.encode() not in data, f"{name} leaked into {where}"
        assert value[-10:].encode() not in data, f"part of the {name} leaked into {where}"


class _EchoingServer:
    """Answers every chat request with HTTP 500 and an error body that echoes the request.

    The body quotes the request line (query string included), the Authorization header and
    its decoded Basic credentials, which is what proxies and debug builds of servers do.
    """

    def __init__(self) -> None:
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                outer.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                auth = self.headers.get("Authorization", "")
                decoded = ""
                if auth.startswith("Basic "):
                    decoded = base64.b64decode(auth[6:]).decode()
                message = f"denied {self.path} auth={auth} user={decoded} key {QUERY_KEY}"
                body = json.dumps({"error": {"message": message, "type": "server_error"}})
                payload = body.encode()
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def __enter__(self) -> _EchoingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echoing_server() -> Iterator[_EchoingServer]:
    with _EchoingServer() as server:
        yield server


def _config(path: Path, images: Path, out: Path, runner: dict[str, Any]) -> Path:
    """`write_config`, plus `[runner.extra_query]` (a table, which it does not write)."""
    settings = dict(runner)
    query = settings.pop("extra_query")
    write_config(path, root=images, output_dir=out, runner=settings)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n[runner.extra_query]\n")
        handle.writelines(f"{key} = {json.dumps(value)}\n" for key, value in query.items())
    return path


def _runner_settings(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "openai",
        "base_url": f"http://{USER}:{URL_PASSWORD}@127.0.0.1:{port}/v1",
        "model": "medgemma-test",
        "api_key_env": "PLANTED_API_KEY",
        "extra_query": {"key": QUERY_KEY, "api-version": "2024-10-21"},
        "max_retries": 1,
        "backoff_initial_s": 0.0,
        "jitter_s": 0.0,
        "timeout_s": 5.0,
        **extra,
    }


def test_planted_secrets_reach_no_file_and_no_log_line(
    tmp_path: Path, echoing_server: _EchoingServer
) -> None:
    write_ecg_folder(tmp_path / "images", 6)
    env = cli_env(extra={"PLANTED_API_KEY": API_KEY})
    captured: dict[str, bytes] = {}
    for flag in ("--verbose", "--debug"):
        out = tmp_path / f"out{flag}"
        config = _config(
            tmp_path / f"run{flag}.toml",
            tmp_path / "images",
            out,
            _runner_settings(echoing_server.port),
        )
        result = run_cli(flag, "run", config, "--no-progress", "--skip-canary", env=env)
        assert result.returncode == 1, "every record failed: the run failed"
        captured[f"{flag} run output"] = (result.stdout + result.stderr).encode()
        report = run_cli(flag, "report", out, env=env)
        assert report.returncode == 0, report.stderr
        captured[f"{flag} report output"] = (report.stdout + report.stderr).encode()
        for path in every_file(out):
            captured[str(path)] = path.read_bytes()
    assert echoing_server.requests == 2 * 6 * 2, "each record was sent, and retried once"

    # The runs really did carry and echo the secrets, and kept what is useful.
    stored = (tmp_path / "out--verbose" / "predictions.jsonl").read_text("utf-8")
    assert stored.count("HTTP 500 from http://127.0.0.1") == 6
    assert "denied /v1/chat/completions?key=***" in stored, stored[:600]
    assert "retrying" in captured["--verbose run output"].decode(), "INFO lines were logged"
    assert any(name.endswith("report.html") for name in captured)
    assert any(name.endswith("predictions.parquet") for name in captured)
    for where, data in captured.items():
        _assert_clean(where, data)


def test_a_key_pasted_into_api_key_env_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    write_ecg_folder(tmp_path / "images", 2)
    out = tmp_path / "out"
    config = _config(
        tmp_path / "run.toml", tmp_path / "images", out, _runner_settings(9, api_key_env=PASTED_KEY)
    )
    for flag in ("--verbose", "--debug"):
        result = run_cli(flag, "run", config, "--no-progress", env=cli_env())
        assert result.returncode == 2, (result.returncode, result.stderr)
        assert "api_key_env" in result.stderr
        assert "NAME of an environment variable" in " ".join(result.stderr.split())
        _assert_clean(f"{flag} output", (result.stdout + result.stderr).encode())
    assert not out.exists(), "nothing was created for a refused config"


def test_debug_tracebacks_are_scrubbed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from medbatch.cli import main
    from medbatch.cli.app import handle_errors, state
    from medbatch.snowflake.session import get_session

    class _RefusingBuilder:
        """Fails the way the connector does: its message quotes the connection."""

        def configs(self, params: dict[str, Any]) -> _RefusingBuilder:
            self.params = params
            return self

        def create(self) -> Any:
            raise RuntimeError(f"250001: Could not connect to Snowflake backend: {self.params}")

    environ = {
        "SNOWFLAKE_ACCOUNT": "acme-xy12345",
        "SNOWFLAKE_USER": "svc",
        "SNOWFLAKE_PASSWORD": SNOWFLAKE_PASSWORD,
    }

    @handle_errors
    def connect() -> None:
        get_session(environ=environ, builder_factory=_RefusingBuilder)

    monkeypatch.setattr(state, "debug", True)
    with pytest.raises(typer.Exit) as stopped:
        connect()
    assert stopped.value.exit_code == 1
    err = capsys.readouterr().err
    assert "Could not connect to Snowflake backend" in err, "the cause is still shown"
    assert "'password': '***'" in err
    assert "Traceback" in err
    assert "SnowflakeConnectionError" in err
    _assert_clean("--debug traceback", err.encode())

    # An error no command turned into a message: main() prints it scrubbed, exit 1.
    def crash() -> None:
        raise ValueError(f"bad url http://{USER}:{URL_PASSWORD}@host/v1?key={QUERY_KEY}")

    monkeypatch.setattr("medbatch.cli.app", crash)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "ValueError: bad url http://***@host/v1?key=***" in err
    _assert_clean("unhandled traceback", err.encode())


def test_httpx_request_lines_are_redacted_in_library_use(
    tmp_path: Path, echoing_server: _EchoingServer, caplog: pytest.LogCaptureFixture
) -> None:
    from medbatch import ImageFolderDataset, classify, get_task
    from medbatch.runners.openai import OpenAICompatibleRunner

    write_ecg_folder(tmp_path / "images", 2)
    task = get_task("ecg")
    dataset = ImageFolderDataset(tmp_path / "images", task.folder_map, labels=task.labels)
    settings = _runner_settings(echoing_server.port, api_key_env=None, max_retries=0)
    del settings["kind"]
    runner = OpenAICompatibleRunner(**settings)
    with caplog.at_level(logging.INFO):  # a notebook that turned INFO logging on
        result = classify(dataset, task, runner, canary=0, progress=False)
    assert (result.predictions["status"] == "error").all()
    requests = [r for r in caplog.records if r.name == "httpx"]
    assert requests, "httpx logged its request lines"
    assert "http://***@127.0.0.1" in requests[0].getMessage()
    assert "key=***" in requests[0].getMessage()
    _assert_clean("log records", caplog.text.encode())
    for message in result.predictions["error_message"]:
        _assert_clean("error message", message.encode())


def test_redact_keeps_what_is_not_a_secret() -> None:
    text = (
        "HTTP 429 from https://api.example.org/v1?api-version=2024-10-21: Basic rhythm; "
        "prompt_tokens: 12, max_tokens=5, KeyError: 'choices'"
    )
    assert redact(text, secrets=()) == text
    assert redact(f"Authorization: Bearer {API_KEY}", secrets=()) == "Authorization: Bearer ***"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PASSWORD=hunter2x", "PASSWORD=***"),
        ('{"client_secret": "abc123def"}', '{"client_secret": "***"}'),
        ("Authorization: Token abcdefgh12", "Authorization: Token ***"),
        ("https://ghp_abcdef123456@github.com/x", "https://***@github.com/x"),
        ("GET /v1?sig=s1g2n3&se=2026", "GET /v1?sig=***&se=2026"),
        ("Basic " + base64.b64encode(b"me:pw").decode(), "Basic ***"),
    ],
)
def test_redact_patterns(text: str, expected: str) -> None:
    assert redact(text, secrets=()) == expected
    assert redact(expected, secrets=()) == expected, "redacting twice changes nothing"
