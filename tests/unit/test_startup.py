"""Start-up stays fast: `import medbatch`, `medbatch --help` and `medbatch tasks` load no
pandas, pyarrow, numpy, scipy or PIL (they cost about a second before anything happens), no
model back-end and no HTTP client. The wall-time target (< 0.3 s) is measured by
`benchmarks/startup.py`, not here: timings belong in benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SLOW = (
    "pandas",
    "pyarrow",
    "numpy",
    "scipy",
    "PIL",
    "matplotlib",
    "sklearn",
    "torch",
    "transformers",
    "vllm",
    "ray",
    # Not the bare `snowflake` namespace: a `.pth` file of snowpark registers it at
    # interpreter start-up, before any import.
    "snowflake.snowpark",
    "snowflake.connector",
    "snowflake.ml",
    "pydicom",
    "kagglehub",
    "jinja2",
    "httpx",
    "openai",
)

PROBE = f"""
import json, sys
statement = sys.argv[1]
argv = json.loads(sys.argv[2])
if argv is not None:
    sys.argv = ["medbatch", *argv]
    from medbatch.cli import main
    try:
        main()
    except SystemExit:
        pass
else:
    exec(statement)
print(json.dumps(sorted(m for m in {SLOW!r} if m in sys.modules)), file=sys.stderr)
"""


def _slow_modules(statement: str = "pass", argv: list[str] | None = None) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, statement, json.dumps(argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize("statement", ["import medbatch", "import medbatch.cli"])
def test_import_loads_no_slow_module(statement: str) -> None:
    assert _slow_modules(statement) == []


def test_import_medbatch_adds_only_the_standard_library() -> None:
    # Stricter than the list above: no third-party module at all (not even pydantic, rich or
    # typer), measured on top of what a bare interpreter has already loaded.
    code = (
        "import sys; before = set(sys.modules); import medbatch; "
        "print(sorted({m.split('.')[0] for m in set(sys.modules) - before}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    added = set(json.loads(done.stdout.replace("'", '"')))
    third_party = added - set(sys.stdlib_module_names) - {"medbatch"}
    assert third_party == set()
    assert "medbatch" in added


@pytest.mark.parametrize("argv", [["--help"], ["tasks"], ["run", "--help"]])
def test_help_and_tasks_load_no_slow_module(argv: list[str]) -> None:
    assert _slow_modules(argv=argv) == []


def test_lazy_exports_still_resolve() -> None:
    import medbatch
    from medbatch.pipeline import classify

    assert medbatch.classify is classify
    assert medbatch.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = medbatch.nope


def test_building_a_parser_compiles_no_patterns() -> None:
    # `medbatch tasks` builds every task, and so its parser: that must stay cheap.
    from medbatch.parsing.answer import FinalAnswerParser
    from medbatch.tasks.ecg import ECG_LABELS

    parser = FinalAnswerParser(ECG_LABELS)
    assert "_mentions" not in vars(parser)  # built on the first parse, not with the task
    assert parser.parse("FINAL CLASSIFICATION: NORMAL").label == "NORMAL"
    assert "_mentions" in vars(parser)
