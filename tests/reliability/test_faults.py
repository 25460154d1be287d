"""Faults: a loopback OpenAI-compatible server that fails 20% of requests, through the CLI.

The server (`medbatch.testing.OpenAITestServer`, in this process) answers 429, 500, hangs
past the client's timeout, sends non-JSON bodies and bodies cut half-way, each with the
same probability, 20% in all. A real `medbatch run` (subprocess) with the `openai` runner
and few retries must end with every record exactly once, as a prediction or as a recorded
error; `--resume --retry-failed` against a healthy server then completes exactly the
failed ones; nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from reliability_helpers import (
    cli_env,
    read_store_strict,
    run_cli,
    write_config,
    write_ecg_folder,
)

from medbatch.cli.app import EXIT_RECORDS_FAILED
from medbatch.testing.openai_server import OpenAITestServer

N_RECORDS = 60
LABELS = ("NORMAL", "ABNORMAL_HEARTBEAT", "MYOCARDIAL_INFARCTION", "POST_MI")
FAULTS = ("429", "500", "timeout", "garbage", "truncated")


def _image_url(body: dict[str, Any]) -> str:
    for message in body["messages"]:
        for part in message.get("content") or ():
            if isinstance(part, dict) and part.get("type") == "image_url":
                return str(part["image_url"]["url"])
    return ""


def answer(body: dict[str, Any]) -> str:
    """A fixed answer per image, so runs can be compared record by record."""
    digest = int(hashlib.sha256(_image_url(body).encode()).hexdigest(), 16)
    return f"Reviewed all leads.\n\nFINAL CLASSIFICATION: {LABELS[digest % 4]}"


def _runner(base_url: str, retries: int) -> dict[str, Any]:
    return {
        "kind": "openai",
        "base_url": base_url,
        "model": "medgemma-test",
        "api_key_env": "RELIABILITY_OPENAI_KEY",
        "concurrency": 8,
        "timeout_s": 0.6,
        "max_retries": retries,
        "backoff_initial_s": 0.0,
        "backoff_max_s": 0.02,
        "jitter_s": 0.0,
        "retry_after_max_s": 0.05,
    }


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    write_ecg_folder(root, N_RECORDS)
    return root


def test_twenty_percent_faults_every_record_once_then_retry_failed_completes(
    images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    env = cli_env(extra={"RELIABILITY_OPENAI_KEY": "k-test"})
    with OpenAITestServer(
        answer,
        fault_rate=0.2,
        faults=FAULTS,
        seed=10,
        hang_s=1.0,
        retry_after_s=0.01,
        api_key="k-test",
        max_lifetime_s=120,
    ) as faulty:
        config = write_config(
            tmp_path / "faulty.toml",
            root=images,
            output_dir=out,
            runner=_runner(faulty.base_url, 1),
        )
        first = run_cli("run", config, "--no-progress", env=env, timeout=120)
        outcomes = Counter(faulty.outcomes)
    # Some records fail twice at 20% faults with one retry: "finished, some failed".
    assert first.returncode == EXIT_RECORDS_FAILED, first.stderr
    for fault in FAULTS:
        assert outcomes[fault] > 0, f"the server never injected {fault}: {outcomes}"
    faults = sum(outcomes[f] for f in FAULTS)
    assert 0.1 < faults / sum(outcomes.values()) < 0.35, outcomes

    stored, tail = read_store_strict(out / "predictions.jsonl")
    assert tail == b""
    ids = [p.record_id for p in stored]
    assert len(ids) == len(set(ids)) == N_RECORDS, "every record exactly once"
    errors = [p for p in stored if p.status == "error"]
    answered = [p for p in stored if p.status != "error"]
    assert errors, "with one retry, some records must fail twice at 20% faults"
    assert answered
    for prediction in errors:
        assert prediction.error_kind == "request_failed", prediction
        assert prediction.error_message, "a recorded error says why"
        assert prediction.retryable is not False
    for prediction in answered:
        assert prediction.status == "parsed", prediction
        assert prediction.text is not None
        assert "FINAL CLASSIFICATION" in prediction.text
    table = pd.read_parquet(out / "predictions.parquet")
    assert table["record_id"].is_unique
    assert len(table) == N_RECORDS

    # Second run: same config, a healthy server, --resume --retry-failed.
    failed_ids = {p.record_id for p in errors}
    with OpenAITestServer(answer, api_key="k-test", max_lifetime_s=120) as healthy:
        config = write_config(
            tmp_path / "healthy.toml",
            root=images,
            output_dir=out,
            runner=_runner(healthy.base_url, 1),
        )
        second = run_cli("run", config, "--resume", "--retry-failed", "--no-progress", env=env)
        asked = len(healthy.requests_seen)
    assert second.returncode == 0, second.stderr
    assert asked == len(failed_ids), "only the failed records are sent again"
    stored, tail = read_store_strict(out / "predictions.jsonl")
    assert tail == b""
    assert Counter(p.record_id for p in stored) == Counter(
        {rid: (2 if rid in failed_ids else 1) for rid in ids}
    ), "a retried record gets one new line; nothing else is written twice"
    table = pd.read_parquet(out / "predictions.parquet")
    assert table["record_id"].is_unique
    assert len(table) == N_RECORDS
    assert (table["status"] == "parsed").all(), table["status"].value_counts()
    # Answers kept from the first run are the first run's, not re-asked.
    first_answers = {p.record_id: p.text for p in answered}
    kept = table.set_index("record_id").loc[list(first_answers), "text"].to_dict()
    assert kept == first_answers


def test_answer_with_lone_surrogate_escape_does_not_stop_a_run(
    images: Path, tmp_path: Path
) -> None:
    """JSON allows "\\ud83d" (half an emoji, as a token split mid-character produces).

    The answer arrives as a Python string that UTF-8 cannot encode; one such answer must
    not stop the run, lose the other predictions of its group, or make the run
    unresumable (it would get the same answer again on every resume).
    """

    def odd(body: dict[str, Any]) -> str:
        return answer(body) + " \ud83d"

    out = tmp_path / "run"
    with OpenAITestServer(odd, max_lifetime_s=60) as server:
        runner = _runner(server.base_url, 0)
        config = write_config(tmp_path / "odd.toml", root=images, output_dir=out, runner=runner)
        env = cli_env(extra={"RELIABILITY_OPENAI_KEY": "unused"})
        result = run_cli("run", config, "--no-progress", env=env, timeout=120)
        raw = json.dumps(server.requests_seen[:1])
    assert raw
    assert result.returncode == 0, result.stderr[-3000:]
    stored, _ = read_store_strict(out / "predictions.jsonl")
    assert len({p.record_id for p in stored}) == N_RECORDS
    assert all(p.status == "parsed" for p in stored)
