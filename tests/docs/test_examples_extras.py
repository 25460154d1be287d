"""Examples on a README install: each runs offline or says in one line which extra it needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]

# Runs a script as `__main__` with some top-level packages made unimportable, as on an
# install without that extra.
BLOCKED_RUN = """
import runpy, sys
blocked = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
for loaded in [m for m in sys.modules if m.split(".")[0] in blocked]:
    del sys.modules[loaded]
script = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


def _run_without(blocked: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, blocked, *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_ecg_snowflake_names_its_extra_in_one_line(tmp_path: Path) -> None:
    script = str(ROOT / "examples" / "ecg_snowflake.py")
    result = _run_without("snowflake", script, "--offline", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        'ecg_snowflake.py needs the snowflake extra: pip install "medbatch[snowflake]"'
    )


def test_custom_parser_names_pytest_in_one_line(tmp_path: Path) -> None:
    script = str(ROOT / "examples" / "custom_parser.py")
    result = _run_without("pytest,_pytest", script, "--offline", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "needs pytest" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_custom_parser_ignores_the_surrounding_project_pytest_config(tmp_path: Path) -> None:
    # A project whose pytest config names an option of a plugin that is not installed, as
    # this repository's `timeout` does on an install without pytest-timeout.
    project = tmp_path / "project"
    (project / "examples").mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "custom_parser.py", project / "examples")
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\nno_such_option = 3\naddopts = "-p no_such_plugin"\n'
    )
    result = subprocess.run(
        [sys.executable, "examples/custom_parser.py", "--offline"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed" in result.stdout
