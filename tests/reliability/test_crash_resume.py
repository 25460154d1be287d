"""Crashes: `kill -9` a real `medbatch run` at seeded random points, then resume.

Promises checked (issue #10):
- after any number of kills and one final `--resume`, the predictions equal those of an
  uninterrupted run, field by field (label, status, method, text, error, fingerprints);
- each record id is stored exactly once (in the JSONL and in the final table);
- the run store is never corrupt: every complete JSONL line is a valid prediction; a torn
  last line (simulated by cutting the file mid-line, as a crash during `write` would) is
  detected, dropped and that record run again — it is never fatal.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from reliability_helpers import (
    cli_command,
    cli_env,
    comparable,
    install_plugin,
    read_store_strict,
    run_cli,
    write_config,
    write_ecg_folder,
)

from medbatch.cli.app import EXIT_RECORDS_FAILED

N_RECORDS = 150
KILLS = 12
SEED = 20261125
DELAY_S = 0.02  # groups are flushed at least every second: kills land between them


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("crash")
    images = root / "images"
    write_ecg_folder(images, N_RECORDS)
    plugin = install_plugin(root / "plugin")
    runner = {"kind": "reliability-echo", "delay_s": DELAY_S, "batch_size": 3}
    reference = write_config(
        root / "reference.toml",
        root=images,
        output_dir=root / "reference",
        runner={**runner, "delay_s": 0.0},  # same answers and resume key, only faster
    )
    crashed = write_config(
        root / "crashed.toml", root=images, output_dir=root / "crashed", runner=runner
    )
    return {"root": root, "plugin": plugin, "reference": reference, "crashed": crashed}


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _kill_at(
    command: list[str], env: dict[str, str], jsonl: Path, progress: Path, rng: random.Random
) -> str:
    """Start a run and SIGKILL it at a random point; say where.

    Most kills come after the runner has answered a random number of the records still to
    do (so they land anywhere: mid-batch, between a group's answers and its fsync, in the
    final parquet write). A quarter come at a random time from start-up instead (imports,
    the store's lock and repair, the manifest write).
    """
    remaining = N_RECORDS - _lines(jsonl)
    progress.unlink(missing_ok=True)
    startup = rng.random() < 0.25
    at_answers = 0 if startup else rng.randrange(0, max(1, remaining))
    delay = rng.uniform(0.0, 1.2) if startup else rng.uniform(0.0, 0.02)
    process = subprocess.Popen(
        command,
        env={**env, "RELIABILITY_PROGRESS": str(progress)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    try:
        while time.monotonic() - started < 60 and process.poll() is None:
            answered = progress.stat().st_size if progress.exists() else 0
            if startup and (answered or time.monotonic() - started >= delay):
                break
            if not startup and answered >= at_answers:
                time.sleep(delay)
                break
            time.sleep(0.002)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            answered = progress.stat().st_size if progress.exists() else 0
            where = f"killed: {answered}/{remaining} answered, {'start-up' if startup else 'run'}"
        else:
            where = f"finished before the kill (rc {process.returncode})"
    finally:
        _, stderr = process.communicate(timeout=30)
    if process.returncode not in (0, EXIT_RECORDS_FAILED, -signal.SIGKILL):
        raise AssertionError(f"run failed on its own ({process.returncode}):\n{stderr}")
    return where


def test_kill_9_at_random_points_then_resume_equals_uninterrupted_run(
    workspace: dict[str, Path],
) -> None:
    env = cli_env(workspace["plugin"])
    clean = run_cli("run", workspace["reference"], "--no-progress", env=env)
    # The echo runner fails some records on purpose: "finished, some records failed".
    assert clean.returncode == EXIT_RECORDS_FAILED, clean.stderr
    expected = pd.read_parquet(workspace["root"] / "reference" / "predictions.parquet")
    assert len(expected) == N_RECORDS
    assert set(expected["status"]) >= {"parsed", "unparseable", "error"}, "cover every path"

    rng = random.Random(SEED)
    out = workspace["root"] / "crashed"
    jsonl = out / "predictions.jsonl"
    command = cli_command("run", workspace["crashed"], "--resume", "--no-progress")
    history = []
    torn_cuts = 0
    for kill in range(KILLS):
        history.append(_kill_at(command, env, jsonl, workspace["root"] / "progress", rng))
        stored, tail = read_store_strict(jsonl)  # raises on any corrupt complete line
        ids = [p.record_id for p in stored]
        assert len(ids) == len(set(ids)), f"duplicate ids after kill {kill}: {history}"
        # Every second kill also tears the last line, as a crash inside write() would.
        history[-1] += f", {len(stored)} stored, torn tail {len(tail)} bytes"
        if kill % 2 == 1 and stored and not tail:
            data = jsonl.read_bytes()
            last_start = data.rstrip(b"\n").rfind(b"\n") + 1
            jsonl.write_bytes(data[: last_start + (len(data) - last_start) // 2])
            torn_cuts += 1
    assert torn_cuts >= 2, history
    assert sum(h.startswith("killed") for h in history) >= 10, history

    final = run_cli("run", workspace["crashed"], "--resume", "--no-progress", env=env)
    assert final.returncode == EXIT_RECORDS_FAILED, f"{final.stderr}\nhistory: {history}"

    stored, tail = read_store_strict(jsonl)
    assert tail == b"", "a finished run leaves no torn line"
    ids = [p.record_id for p in stored]
    assert len(ids) == len(set(ids)) == N_RECORDS, f"each id exactly once; history: {history}"

    got = pd.read_parquet(out / "predictions.parquet")
    assert got["record_id"].is_unique
    assert sorted(got["record_id"]) == sorted(expected["record_id"])
    expected_rows = {row["record_id"]: comparable(row) for row in expected.to_dict("records")}
    got_rows = {row["record_id"]: comparable(row) for row in got.to_dict("records")}
    different = [rid for rid in expected_rows if expected_rows[rid] != got_rows[rid]]
    assert not different, f"{len(different)} records differ, e.g. {different[:3]}"
    # The JSONL agrees with the table.
    assert {p.record_id: comparable(p) for p in stored} == got_rows


def test_resume_after_kill_reports_reuse_and_manifest_stays_valid(
    workspace: dict[str, Path], tmp_path: Path
) -> None:
    """A killed run leaves a readable manifest; the resumed run says how much it reused."""
    env = cli_env(workspace["plugin"])
    images = workspace["root"] / "images"
    config = write_config(
        tmp_path / "run.toml",
        root=images,
        output_dir=tmp_path / "out",
        runner={"kind": "reliability-echo", "delay_s": DELAY_S, "batch_size": 3},
    )
    jsonl = tmp_path / "out" / "predictions.jsonl"
    process = subprocess.Popen(
        cli_command("run", config, "--no-progress"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 10:
            break
        time.sleep(0.005)
    process.kill()
    process.wait(timeout=30)
    stored, _ = read_store_strict(jsonl)
    assert stored, "the kill came after some predictions were durable"
    from medbatch.store import RunStore

    manifest = RunStore(tmp_path / "out").read_manifest()
    assert manifest is not None
    assert manifest.status == "running", "kill -9 leaves no chance to write; that is fine"

    resumed = run_cli("run", config, "--resume", "--no-progress", env=env)
    assert resumed.returncode == EXIT_RECORDS_FAILED, resumed.stderr
    assert f"({len(stored)} reused from before)" in " ".join(resumed.stdout.split())
    manifest = RunStore(tmp_path / "out").read_manifest()
    assert manifest is not None
    assert manifest.status == "completed"
    assert manifest.counts["records"] == N_RECORDS
    assert manifest.counts["reused"] == len(stored)
