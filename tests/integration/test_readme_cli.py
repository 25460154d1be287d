"""Follow the README as a newcomer would, with the installed `medbatch` command.

The demo, then the README's offline TOML through validate, run, run again (nothing redone,
model not loaded), evaluate, report (with images, no flag) and compare, each command taken
from the README itself and run in a fresh folder in its own process. The reports are
checked for the image links and for the banners that apply to them.

Installation itself (a fresh virtual environment, `pip install -e ".[all]"`) is what CI's
`scripts/check` line does on every run; this test starts where the README's commands do.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"

pytest.importorskip("transformers", reason="the README's offline run needs the local extra")


def _medbatch() -> list[str]:
    """The console script the install put next to this Python, else the same entry point."""
    script = Path(sys.executable).parent / "medbatch"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from medbatch.cli import main; main()"]


def _readme_commands() -> tuple[str, str, list[str]]:
    """The demo command, the `my_run.toml` body and the bash commands that follow it."""
    text = README.read_text("utf-8")
    demo = re.search(r"(medbatch demo[^\n`]*)", text)
    assert demo is not None, "the README no longer shows `medbatch demo`"
    marker = "<!-- file: my_run.toml -->"
    after = text[text.index(marker) :]
    toml = re.search(r"```toml\n(.*?)```", after, re.S)
    bash = re.search(r"```bash\n(.*?)```", after, re.S)
    assert toml is not None
    assert bash is not None
    commands = [line.split(" #")[0].strip() for line in bash.group(1).splitlines()]
    return demo.group(1).strip(), toml.group(1), [c for c in commands if c]


def _run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    words = shlex.split(command)
    assert words[0] == "medbatch", command
    # -v: the runner's INFO log says when a model is loaded, which the second run must not do.
    done = subprocess.run(
        [*_medbatch(), "-v", *words[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _check_report(page: str, *, banners: set[str]) -> None:
    assert page.count('<label class="zoom"') >= 4, "example images are missing"
    assert 'type="checkbox"' in page  # each image opens full size (no script needed)
    assert "image not available locally" not in page
    known = {
        "random": "This run used a tiny random-weight test model.",
        "illustrative": "These answers are illustrative, not model output.",
        "incomplete": "This run is incomplete",
    }
    for name, text in known.items():
        assert (text in page) == (name in banners), f"banner {name!r} wrong"


def test_the_readme_commands_work_offline(tmp_path: Path) -> None:
    demo, toml, commands = _readme_commands()

    _run(demo, tmp_path)
    demo_report = tmp_path / "medbatch-demo" / "run" / "report.html"
    assert demo_report.is_file(), "the README names medbatch-demo/run/report.html"
    _check_report(demo_report.read_text("utf-8"), banners={"random"})

    project = tmp_path / "project"
    project.mkdir()
    (project / "my_run.toml").write_text(toml, "utf-8")
    outputs: dict[str, subprocess.CompletedProcess[str]] = {}
    runs = 0
    for command in commands:
        if command.startswith("medbatch run my_run.toml") and command.endswith("my_run.toml"):
            runs += 1
            outputs[f"run {runs}"] = _run(command, project)
        else:
            outputs[command.split()[1]] = _run(command, project)

    assert "8 records" in outputs["validate"].stdout
    first, second = outputs["run 1"], outputs["run 2"]
    assert "(0 reused from before)" in first.stdout
    assert "loaded medbatch/tiny-gemma3" not in first.stderr  # the name, resolved to a folder
    assert re.search(r"INFO medbatch\.runners\.transformers: loaded \S+ on cpu", first.stderr)
    assert "(8 reused from before)" in second.stdout
    assert "Nothing left to run" in second.stdout
    assert "INFO medbatch.runners.transformers: loaded" not in second.stderr
    assert "95% CI" in outputs["evaluate"].stdout
    compare = " ".join(outputs["compare"].stdout.split())
    assert "A: runs/ecg (medbatch/tiny-gemma3, prompt direct-v1)" in compare
    assert "B: runs/ecg-free (medbatch/tiny-gemma3, prompt cot-v1)" in compare

    report = project / "runs" / "ecg" / "report.html"
    _check_report(report.read_text("utf-8"), banners={"random"})
    # The report finds the images after the project folder moves.
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    _run("medbatch report runs/ecg", moved)
    _check_report((moved / "runs" / "ecg" / "report.html").read_text("utf-8"), banners={"random"})


def test_the_replay_demo_report_says_its_answers_are_illustrative(tmp_path: Path) -> None:
    _run("medbatch demo --replay -o replay-demo", tmp_path)
    page = (tmp_path / "replay-demo" / "replay-run" / "report.html").read_text("utf-8")
    assert "These answers are illustrative, not model output." in page
    assert "This run is incomplete" not in page
