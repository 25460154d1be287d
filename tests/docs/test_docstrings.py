"""Every `>>>` example in a docstring of `src/medbatch` runs and prints what it shows.

A `>>>` example is a promise that it runs as written; an illustration that needs a live
service (a Snowflake account, a server, a download) is a fenced code block instead.
Examples may use two names, as pytest's `doctest_namespace` would give them: `tmp_path`
(an empty temporary folder) and `requests` (three small `InferenceRequest`s). They run
from the repository root, so `examples/...` paths resolve.

Modules are found by reading the source for `>>>`, so collection imports nothing; a module
whose examples need an optional extra is skipped, with the reason, when it is absent.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
from pathlib import Path

import pytest

from medbatch.testing.contracts import make_request

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"

# Modules whose examples need an optional extra: module → the import it needs.
REQUIRES = {
    "medbatch.runners.transformers": "transformers",
    "medbatch.testing.tiny_vlm": "transformers",
    "medbatch.datasets.dicom": "pydicom",
}


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted((SRC / "medbatch").rglob("*.py")):
        if ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


MODULES = _modules_with_examples()


def test_examples_were_found() -> None:
    assert len(MODULES) >= 20  # the walk above must not silently find nothing


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples_run(
    module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needed = REQUIRES.get(module_name)
    if needed is not None and importlib.util.find_spec(needed) is None:
        pytest.skip(f"{module_name}'s examples need the optional {needed}, not installed")
    monkeypatch.chdir(ROOT)
    module = importlib.import_module(module_name)
    namespace = {"tmp_path": tmp_path, "requests": [make_request(f"r{i}") for i in range(3)]}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.FAIL_FAST
    )
    report: list[str] = []
    attempted = 0
    for test in finder.find(module, module_name, globs={**vars(module), **namespace}):
        result = runner.run(test, out=report.append, clear_globs=True)
        attempted += result.attempted
    assert attempted > 0, f"{module_name} has '>>>' but no example doctest can find"
    assert runner.failures == 0, "".join(report)
