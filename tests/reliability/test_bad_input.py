"""Bad input: broken images, broken configs, nothing to run, nowhere to write, a full disk.

Each case goes through the real CLI (`medbatch run CONFIG.toml`) and must end in a clear,
one-line error and a non-zero exit (2 for bad input, 1 for a failed run), never a traceback;
a bad image fails only its own record; nothing already written is ever lost.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from reliability_helpers import (
    cli_env,
    install_plugin,
    read_store_strict,
    run_cli,
    tiny_png,
    write_config,
    write_ecg_folder,
)

from medbatch.cli.app import EXIT_RECORDS_FAILED
from medbatch.store import RunStore
from medbatch.testing.bad_images import bomb_png
from medbatch.testing.openai_server import OpenAITestServer

# -- images --------------------------------------------------------------------------------


def _encoded(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def bad_and_odd_images() -> dict[str, tuple[str, bytes, bool]]:
    """kind -> (file name, content, expected to load)."""
    noise = Image.effect_noise((120, 90), 60).convert("RGB")
    jpeg = _encoded(noise, "JPEG", quality=95)
    ramp = np.linspace(1000, 4000, 64 * 48, dtype=np.uint16).reshape(48, 64)
    return {
        "good": ("good.png", tiny_png(1), True),
        "zero_byte": ("zero.jpg", b"", False),
        "truncated_jpeg": ("truncated.jpg", jpeg[: len(jpeg) // 2], False),
        "text_as_jpg": ("notes.jpg", b"patient list, do not share\n", False),
        "decompression_bomb": ("bomb.png", bomb_png(), False),
        "cmyk": ("cmyk.jpg", _encoded(Image.new("CMYK", (64, 48), (0, 120, 60, 0)), "JPEG"), True),
        "sixteen_bit": ("sixteen.png", _encoded(Image.fromarray(ramp), "PNG"), True),
        "palette": (
            "palette.png",
            _encoded(Image.new("RGB", (64, 48), (10, 200, 30)).convert("P"), "PNG"),
            True,
        ),
        "alpha": ("alpha.png", _encoded(Image.new("RGBA", (64, 48), (255, 0, 0, 0)), "PNG"), True),
    }


def _openai_runner(base_url: str) -> dict[str, Any]:
    return {
        "kind": "openai",
        "base_url": base_url,
        "model": "medgemma-test",
        "api_key_env": "RELIABILITY_OPENAI_KEY",
        "max_retries": 0,
        "timeout_s": 5.0,
    }


def _error_line(result: Any) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines, "a failing command says why"
    return " ".join(lines)


def test_every_bad_image_kind_fails_alone_and_odd_ones_are_normalised(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "normal_ecg_images"
    folder.mkdir(parents=True)
    images = bad_and_odd_images()
    for name, data, _ in images.values():
        (folder / name).write_bytes(data)
    out = tmp_path / "run"
    env = cli_env(extra={"RELIABILITY_OPENAI_KEY": "k"})
    with OpenAITestServer(lambda body: "FINAL CLASSIFICATION: NORMAL", max_lifetime_s=60) as server:
        config = write_config(
            tmp_path / "run.toml",
            root=tmp_path / "images",
            output_dir=out,
            runner=_openai_runner(server.base_url),
        )
        result = run_cli("run", config, "--no-progress", env=env)
        sent = len(server.requests_seen)
    # Finished, with the bad images as failed records: the documented "some failed" code.
    assert result.returncode == EXIT_RECORDS_FAILED, result.stderr
    table = pd.read_parquet(out / "predictions.parquet").set_index("record_id")
    assert len(table) == len(images)
    for kind, (name, _, loads) in images.items():
        row = table.loc[f"normal_ecg_images/{name}"]
        if loads:
            assert row["status"] == "parsed", (kind, row.to_dict())
            assert row["label"] == "NORMAL"
        else:
            assert row["status"] == "error", (kind, row.to_dict())
            assert row["error_kind"] == "image_error", (kind, row["error_kind"])
            assert name in row["error_message"], f"{kind}: the message names the file"
    assert sent == sum(loads for _, _, loads in images.values()), "bad images are never sent"


# -- configs ---------------------------------------------------------------------------------

GOOD_HEAD = (
    'output_dir = "out"\n[task]\nname = "ecg"\n[dataset]\nkind = "folder"\nroot = "images"\n'
)

BAD_CONFIGS = {
    "not_toml": ("output_dir = 'out\n[task", "not valid TOML"),
    "unknown_runner": (GOOD_HEAD + '[runner]\nkind = "replya"\n', "Did you mean: replay"),
    "unknown_task": (GOOD_HEAD.replace('"ecg"', '"ekg"') + '[runner]\nkind = "replay"\n', "ekg"),
    "missing_runner": (GOOD_HEAD, "runner"),
    "unknown_top_key": (GOOD_HEAD + 'colour = "red"\n[runner]\nkind = "replay"\n', "colour"),
    "bad_param_type": (
        GOOD_HEAD + '[runner]\nkind = "replay"\npath = "a.jsonl"\n[params]\ntemperature = "hot"\n',
        "temperature",
    ),
    "unknown_runner_option": (
        GOOD_HEAD + '[runner]\nkind = "replay"\npath = "a.jsonl"\nbatchsize = 3\n',
        "[runner] replay: unknown key 'batchsize'",
    ),
    "missing_dataset_root": (
        GOOD_HEAD.replace('root = "images"', 'root = "no-such-folder"')
        + '[runner]\nkind = "replay"\npath = "a.jsonl"\n',
        "no-such-folder",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_clear_line_and_exit_2(case: str, tmp_path: Path) -> None:
    text, expected = BAD_CONFIGS[case]
    write_ecg_folder(tmp_path / "images", 4)
    (tmp_path / "a.jsonl").write_text("", encoding="utf-8")
    config = tmp_path / "run.toml"
    config.write_text(text, encoding="utf-8")
    result = run_cli("run", config, "--no-progress", cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    message = _error_line(result)
    assert message.startswith("error:")
    assert expected in message, message
    assert not (tmp_path / "out" / "predictions.jsonl").exists(), "nothing ran"


# -- datasets with nothing to run ---------------------------------------------------------


def _replay_config(tmp_path: Path, root: Path, extra_dataset: str = "") -> Path:
    (tmp_path / "answers.jsonl").write_text("", encoding="utf-8")
    config = tmp_path / "run.toml"
    config.write_text(
        f'output_dir = "out"\n[task]\nname = "ecg"\n[dataset]\nkind = "folder"\n'
        f'root = "{root}"\n{extra_dataset}[runner]\nkind = "replay"\npath = "answers.jsonl"\n',
        encoding="utf-8",
    )
    return config


def test_empty_dataset_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "images" / "normal_ecg_images").mkdir(parents=True)
    result = run_cli("run", _replay_config(tmp_path, tmp_path / "images"), "--no-progress")
    assert result.returncode != 0, "a run over no records is an error, not an empty success"
    assert "no records" in _error_line(result)


def test_unknown_labels_are_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "weird"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(tiny_png(1))
    config = _replay_config(tmp_path, tmp_path / "images", 'label_map = {weird = "ALIEN"}\n')
    result = run_cli("run", config, "--no-progress")
    assert result.returncode != 0, "truths outside the task's labels would corrupt accuracy"
    assert "ALIEN" in _error_line(result)


def test_dataset_of_zero_valid_images_fails_the_run(tmp_path: Path) -> None:
    folder = tmp_path / "images" / "normal_ecg_images"
    folder.mkdir(parents=True)
    images = bad_and_odd_images()
    for kind in ("zero_byte", "truncated_jpeg", "text_as_jpg", "decompression_bomb"):
        name, data, _ = images[kind]
        (folder / name).write_bytes(data)
    env = cli_env(extra={"RELIABILITY_OPENAI_KEY": "k"})
    with OpenAITestServer(lambda body: "NORMAL", max_lifetime_s=60) as server:
        config = write_config(
            tmp_path / "run.toml",
            root=tmp_path / "images",
            output_dir=tmp_path / "out",
            runner=_openai_runner(server.base_url),
        )
        result = run_cli("run", config, "--no-progress", env=env)
    assert result.returncode == 1, "a run in which no record could be answered has failed"
    assert "image_error" in _error_line(result)
    stored, _ = read_store_strict(tmp_path / "out" / "predictions.jsonl")
    assert len(stored) == 4, "the errors are still recorded, one per record"


# -- where results go ---------------------------------------------------------------------


def test_output_directory_that_cannot_be_written(tmp_path: Path) -> None:
    write_ecg_folder(tmp_path / "images", 4)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    plugin = install_plugin(tmp_path / "plugin")
    config = write_config(
        tmp_path / "run.toml", root=tmp_path / "images", output_dir=blocker / "run"
    )
    result = run_cli("run", config, "--no-progress", env=cli_env(plugin))
    assert result.returncode == 1
    message = _error_line(result)
    assert "cannot write" in message
    assert str(blocker / "run") in message


class _DiskFills:
    """A predictions handle whose `n`-th write gets half its bytes out, then ENOSPC."""

    def __init__(self, real: IO[str], fail_at: int) -> None:
        self.real = real
        self.fail_at = fail_at
        self.calls = 0
        self.lines_written = 0

    def write(self, text: str) -> int:
        self.calls += 1
        if self.calls >= self.fail_at:
            self.real.write(text[: len(text) // 2])
            self.real.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        self.lines_written += text.count("\n")
        return self.real.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_disk_full_mid_run_is_a_clear_error_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from medbatch.cli import app
    from medbatch.registry import RUNNERS

    ids = write_ecg_folder(tmp_path / "images", 150)
    plugin = install_plugin(tmp_path / "plugin")
    monkeypatch.syspath_prepend(str(plugin))
    # The plug-in is registered for this test only: the registry is process-wide.
    monkeypatch.setattr(RUNNERS, "_paths", dict(RUNNERS._paths))
    monkeypatch.setattr(RUNNERS, "_loaded", dict(RUNNERS._loaded))
    RUNNERS.register("reliability-echo", "reliability_echo_runner:EchoRunner")
    config = write_config(
        tmp_path / "run.toml",
        root=tmp_path / "images",
        output_dir=tmp_path / "out",
        # Slow enough for several durable groups (the pipeline flushes at least every second).
        runner={"kind": "reliability-echo", "batch_size": 8, "delay_s": 0.02},
    )
    real_open = RunStore.open
    fills: list[_DiskFills] = []

    def open_on_a_small_disk(self: RunStore) -> RunStore:
        real_open(self)
        if not fills and self._handle is not None:
            fills.append(_DiskFills(self._handle, fail_at=2))
            self._handle = fills[0]  # type: ignore[assignment]
        return self

    monkeypatch.setattr(RunStore, "open", open_on_a_small_disk)
    result = CliRunner().invoke(app, ["run", str(config), "--no-progress"])
    assert fills, "the store was opened"
    assert fills[0].calls >= 2, "the disk filled up mid-run"
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output or "cannot write" in result.output
    assert "Traceback" not in result.output

    jsonl = tmp_path / "out" / "predictions.jsonl"
    before, tail = read_store_strict(jsonl)
    assert tail == b"", "the half-written line was cut back"
    assert len(before) >= fills[0].lines_written > 0, "groups written before it are intact"
    assert len({p.record_id for p in before}) == len(before)

    monkeypatch.setattr(RunStore, "open", real_open)  # space freed
    resumed = CliRunner().invoke(app, ["run", str(config), "--resume", "--no-progress"])
    # The echo runner fails some records on purpose: finished, some records failed.
    assert resumed.exit_code == EXIT_RECORDS_FAILED, resumed.output
    after, _ = read_store_strict(jsonl)
    assert [p.model_dump() for p in after[: len(before)]] == [p.model_dump() for p in before]
    assert sorted(p.record_id for p in after) == sorted(ids), "each record exactly once"
