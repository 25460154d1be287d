"""`import medbatch` must stay light: heavy back-ends load only when used."""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "torch",
    "transformers",
    "vllm",
    "snowflake",
    "snowflake.snowpark",
    "snowflake.ml",
    "snowflake.connector",
    "kagglehub",
    "pydicom",
    "sklearn",
    "ray",
)


def _heavy_modules_after(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return eval(out)


def test_import_medbatch_imports_no_heavy_backend() -> None:
    # snowflake-snowpark-python installs a legacy namespace `.pth` file that registers the
    # empty `snowflake` namespace at interpreter start-up, before any import: measure what
    # importing medbatch adds on top of a bare interpreter.
    baseline = set(_heavy_modules_after("pass"))
    after = set(_heavy_modules_after("import medbatch, medbatch.cli, medbatch.testing"))
    assert after - baseline == set()
    assert baseline <= {"snowflake"}


def test_naming_the_ray_runner_imports_no_ray() -> None:
    # Ray is imported when the actors start, not when a config names `kind = "ray"`.
    after = set(_heavy_modules_after("import medbatch.runners.ray"))
    assert "ray" not in after
    assert "torch" not in after
