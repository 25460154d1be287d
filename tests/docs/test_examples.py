"""Every example script runs in its offline mode, and leaves the results it promises.

Examples are run in-process (`runpy` + their `main(argv)`) where they expose one, so the
heavy imports are paid once; the others run in a subprocess. Each test checks the run
directory the example wrote, not only its exit code, so an example that rots fails here.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medbatch import load_predictions

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"
SCRIPTS = sorted(path.name for path in EXAMPLES.glob("*.py"))
TESTED = {
    "chest_xray_subclass.py",
    "custom_parser.py",
    "ecg_local.py",
    "ecg_snowflake.py",
    "openai_server.py",
}


def load_main(name: str) -> Callable[[list[str]], int]:
    namespace: dict[str, Any] = runpy.run_path(str(EXAMPLES / name), run_name="example")
    main: Callable[[list[str]], int] = namespace["main"]
    return main


def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning:medbatch"}
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def manifest(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / "manifest.json").read_text("utf-8"))
    return data


def test_every_example_is_tested_and_documented() -> None:
    assert set(SCRIPTS) == TESTED, "add the new example to TESTED and test it below"
    for name in SCRIPTS:
        text = (EXAMPLES / name).read_text("utf-8")
        doc = text.split('"""')[1]
        assert "python examples/" + name in doc, f"{name}: the docstring must say how to run it"
        assert "--offline" in doc or "--dry-run" in doc, f"{name}: no offline switch documented"


def test_chest_xray_subclass_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_main("chest_xray_subclass.py")(["--offline", "--output-dir", str(tmp_path)]) == 0
    frame = load_predictions(tmp_path / "run")
    assert len(frame) == 6
    assert set(frame["truth"]) == {"NORMAL", "PNEUMONIA"}
    assert (frame["label"] == frame["truth"]).all()  # the stand-in reads the fake opacities
    assert manifest(tmp_path / "run")["task"] == "chest-xray"
    assert "accuracy 1.00" in capsys.readouterr().out


def test_chest_xray_user_code_is_under_50_lines() -> None:
    lines = (EXAMPLES / "chest_xray_subclass.py").read_text("utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# --- user code"))
    end = next(i for i, line in enumerate(lines) if line.startswith("# --- end of user code"))
    user_code = [line for line in lines[start + 1 : end] if line.strip()]
    assert 0 < len(user_code) < 50


def test_openai_server_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert load_main("openai_server.py")(["--offline", "--output-dir", str(tmp_path)]) == 0
    frame = load_predictions(tmp_path)
    assert len(frame) == 8
    assert (frame["status"] == "parsed").all()  # every injected fault was retried away
    out = capsys.readouterr().out
    assert "loopback server outcomes" in out
    assert manifest(tmp_path)["runner"]["runner"] == "openai"


def test_ecg_local_offline_with_the_fake_vllm(tmp_path: Path) -> None:
    main = load_main("ecg_local.py")
    assert main(["--offline", "--runner", "vllm", "--output-dir", str(tmp_path)]) == 0
    frame = load_predictions(tmp_path / "run")
    assert len(frame) == 8
    assert frame["label"].notna().all()  # constrained: every answer is a label
    assert manifest(tmp_path / "run")["constrained"] is True
    # Resume: a second run reuses every record.
    assert main(["--offline", "--runner", "vllm", "--output-dir", str(tmp_path)]) == 0
    assert manifest(tmp_path / "run")["counts"]["reused"] == 8


@pytest.mark.slow
def test_ecg_local_offline_with_the_tiny_vlm(
    tmp_path: Path, seed_tiny_vlm: Callable[[Path], None]
) -> None:
    seed_tiny_vlm(tmp_path / "tiny-vlm")  # the example's build is then a no-op
    assert load_main("ecg_local.py")(["--offline", "--output-dir", str(tmp_path)]) == 0
    frame = load_predictions(tmp_path / "run")
    assert len(frame) == 8
    assert frame["label"].notna().all()
    assert (tmp_path / "tiny-vlm" / "config.json").exists()


def test_custom_parser_passes_its_contract(tmp_path: Path) -> None:
    done = run_script(str(EXAMPLES / "custom_parser.py"), "--offline", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "'ANSWER: STEMI'" in done.stdout
    assert "MYOCARDIAL_INFARCTION (parsed, answer-line)" in done.stdout
    assert " passed" in done.stdout
    assert "failed" not in done.stdout


def test_ecg_snowflake_dry_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("snowflake.snowpark")
    run_dir = tmp_path / "run"
    argv = ["ecg_snowflake.py", "--dry-run", "--per-class", "2", "--run-dir", str(run_dir)]
    monkeypatch.setattr(sys, "argv", argv)  # its main() reads sys.argv
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(EXAMPLES / "ecg_snowflake.py"), run_name="__main__")
    frame = load_predictions(run_dir)
    assert len(frame) == 8
    assert (frame["label"] == frame["truth"]).all()  # the fake model reads the stage path
    assert manifest(run_dir)["runner"]["runner"] == "snowflake"


def test_skin_lesion_task_by_configuration_alone(tmp_path: Path) -> None:
    """`medbatch run` on the example config: a new task with no Python."""
    from typer.testing import CliRunner

    from medbatch.cli import app
    from medbatch.config import TaskSection

    if "task file" not in (TaskSection.model_fields["name"].description or ""):
        pytest.skip("RunConfig does not read [task] name = '*.toml' yet (issue #9 diff)")
    for path in EXAMPLES.glob("skin_lesion_*"):
        copy = shutil.copytree if path.is_dir() else shutil.copy
        copy(path, tmp_path / path.name)
    config = tmp_path / "skin_lesion_config.toml"
    result = CliRunner().invoke(app, ["run", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    frame: pd.DataFrame = load_predictions(tmp_path / "runs" / "skin-lesion")
    assert len(frame) == 6
    assert set(frame["truth"]) == {"MELANOMA", "NEVUS", "KERATOSIS"}
    assert frame.set_index("record_id").loc["nv/ISIC_0000004.jpg", "label"] == "NEVUS"
    assert manifest(tmp_path / "runs" / "skin-lesion")["task"] == "skin-lesion"
    validated = CliRunner().invoke(app, ["validate", str(config)])
    assert validated.exit_code == 0, validated.output


def test_the_ecg_local_toml_is_a_valid_run_config() -> None:
    from medbatch.config import load_config

    config = load_config(EXAMPLES / "ecg_local.toml")
    assert config.runner.kind == "transformers"
    assert config.build_task().name == "ecg"
