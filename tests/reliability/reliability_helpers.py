"""Shared helpers of the reliability suite: small image folders, a plug-in runner, the CLI.

The plug-in runner is registered the way a third-party package registers one: a
`*.dist-info/entry_points.txt` with a `medbatch.runners` entry, on `PYTHONPATH` of the
`medbatch` subprocess. So the CLI under test is the real one, unmodified.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from medbatch.records import Prediction

ECG_FOLDERS = (
    "normal_ecg_images",
    "abnormal_heartbeat_ecg_images",
    "myocardial_infarction_ecg_images",
    "post_mi_history_ecg_images",
)
PLUGIN_RUNNER = "reliability-echo"

_PLUGIN_SOURCE = '''
"""A deterministic, optionally slow runner for the reliability suite."""

from __future__ import annotations

import hashlib
import os
import time

from pydantic import Field

from medbatch.errors import ImageLoadError
from medbatch.images import encode_image
from medbatch.records import InferenceResponse
from medbatch.runners.base import BatchRunner, RunnerConfig

LABELS = ("NORMAL", "ABNORMAL_HEARTBEAT", "MYOCARDIAL_INFARCTION", "POST_MI")


class EchoConfig(RunnerConfig):
    delay_s: float = Field(default=0.0, description="Sleep per request.")
    model_id: str = Field(default="reliability-echo", description="Model id.")
    batch_size: int = Field(default=4, description="Requests per batch.")
    decode_images: bool = Field(default=False, description="Decode images like a real runner.")


def answer_for(record_id: str) -> tuple[str, str | None]:
    """A fixed answer per record id: mostly a label, some unparseable, some failures."""
    digest = int(hashlib.sha256(record_id.encode()).hexdigest(), 16)
    if digest % 11 == 0:
        return "", "request_failed"
    if digest % 7 == 0:
        return "I cannot tell from this tracing.", None
    return f"Rhythm reviewed.\\n\\nFINAL CLASSIFICATION: {LABELS[digest % 4]}", None


class EchoRunner(BatchRunner):
    name = "reliability-echo"
    config_class = EchoConfig

    def __init__(self, delay_s=0.0, model_id="reliability-echo", batch_size=4,
                 decode_images=False):
        self.delay_s = delay_s
        self.model_id = model_id
        self.batch_size = batch_size
        self.decode_images = decode_images

    def _run_batch(self, requests):
        progress = os.environ.get("RELIABILITY_PROGRESS")
        for request in requests:
            if self.delay_s:
                time.sleep(self.delay_s)
            if progress:
                # One byte per answered request: the crash test kills at a random count.
                with open(progress, "ab") as handle:
                    handle.write(b".")
            if self.decode_images:
                try:
                    for image in request.images:
                        encode_image(image)
                except ImageLoadError as exc:
                    yield InferenceResponse.failure(
                        request.record_id, "image_error", str(exc), retryable=False
                    )
                    continue
            text, error = answer_for(request.record_id)
            if error:
                yield InferenceResponse.failure(request.record_id, error, "scripted failure")
            else:
                yield InferenceResponse(
                    record_id=request.record_id, text=text, finish_reason="stop"
                )
'''


def install_plugin(root: Path) -> Path:
    """Write the plug-in module and its entry point under `root`; return the folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "reliability_echo_runner.py").write_text(_PLUGIN_SOURCE, encoding="utf-8")
    dist = root / "reliability_echo_runner-0.1.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: reliability-echo-runner\nVersion: 0.1\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        f"[medbatch.runners]\n{PLUGIN_RUNNER} = reliability_echo_runner:EchoRunner\n",
        encoding="utf-8",
    )
    return root


def tiny_png(seed: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """A small PNG whose content depends on `seed` (so every image has its own sha256)."""
    image = Image.new("RGB", size, (seed % 256, (seed // 256) % 256, (seed * 7) % 256))
    image.putpixel((0, 0), (seed % 251, seed % 241, seed % 239))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_ecg_folder(root: Path, n: int, *, offset: int = 0) -> list[str]:
    """`n` tiny PNGs spread over the ECG class folders; returns the record ids."""
    ids = []
    for i in range(n):
        folder = ECG_FOLDERS[i % len(ECG_FOLDERS)]
        path = root / folder / f"img{i + offset:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(tiny_png(i + offset))
        ids.append(f"{folder}/{path.name}")
    return ids


def write_config(
    path: Path,
    *,
    root: str | Path,
    output_dir: str | Path,
    runner: Mapping[str, Any] | None = None,
    extra: str = "",
) -> Path:
    """A run config for the ECG task over a folder; the plug-in runner by default."""
    runner = runner or {"kind": PLUGIN_RUNNER}
    runner_lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in runner.items())
    path.write_text(
        textwrap.dedent(
            f"""\
            output_dir = {json.dumps(str(output_dir))}
            {extra}
            [task]
            name = "ecg"

            [dataset]
            kind = "folder"
            root = {json.dumps(str(root))}

            [runner]
            """
        )
        + runner_lines
        + "\n",
        encoding="utf-8",
    )
    return path


def cli_env(
    plugin_dir: Path | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a `medbatch` subprocess: the plug-in importable, no terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SNOWFLAKE_")}
    if plugin_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(plugin_dir), env.get("PYTHONPATH", "")) if p
        )
    env["COLUMNS"] = "200"
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def cli_command(*args: str | Path) -> list[str]:
    """`medbatch ARGS...` run by this interpreter."""
    return [sys.executable, "-c", "from medbatch.cli import main; main()", *map(str, args)]


def run_cli(
    *args: str | Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI to completion and capture its output."""
    return subprocess.run(
        cli_command(*args),
        env=dict(env) if env is not None else cli_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_store_strict(path: Path) -> tuple[list[Prediction], bytes]:
    """Every complete line of a predictions JSONL must be a valid `Prediction`.

    Returns the predictions and the torn tail (bytes after the last newline; empty when the
    file ends cleanly). Raises AssertionError on any corrupt complete line.
    """
    if not path.exists():
        return [], b""
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    predictions = []
    for number, line in enumerate(data[:cut].splitlines(), start=1):
        assert line.strip(), f"blank line {number} in {path}"
        try:
            predictions.append(Prediction.model_validate_json(line))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise AssertionError(f"corrupt line {number} in {path}: {line[:200]!r}") from exc
    return predictions, data[cut:]


def comparable(prediction: Prediction | Mapping[str, Any]) -> tuple[Any, ...]:
    """What must be equal between an interrupted-and-resumed run and a clean one."""
    row = prediction.model_dump(mode="json") if isinstance(prediction, Prediction) else prediction
    return tuple(
        row.get(key)
        for key in (
            "record_id",
            "image_sha256",
            "truth",
            "label",
            "status",
            "method",
            "text",
            "error_kind",
            "model_id",
            "prompt_fingerprint",
            "params_fingerprint",
        )
    )


def every_file(root: Path) -> Sequence[Path]:
    """Every regular file under `root`, hidden ones included."""
    return [path for path in sorted(root.rglob("*")) if path.is_file()]


def crc(data: bytes) -> int:
    """A short checksum, for messages."""
    return zlib.crc32(data)
