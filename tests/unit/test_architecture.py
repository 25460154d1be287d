"""The import rules of docs/concepts/architecture.md, checked on the source.

Every `import` in `src/medbatch` counts: at module top, inside functions (the lazy ones)
and under `if TYPE_CHECKING:`. A rule names who imports (a module prefix) and what it must
not import; the few allowed exceptions are listed with their reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# The value types and helpers every stage shares: they import nothing above them.
FOUNDATION = (
    "medbatch.errors",
    "medbatch.files",
    "medbatch.redaction",
    "medbatch.versions",
    "medbatch.terminal",
    "medbatch.labels",
    "medbatch.records",
    "medbatch.image_ref",
    "medbatch.registry",
    "medbatch.profiles",
    "medbatch.constraints",
    "medbatch.scoring",
    "medbatch.images",
)
_ABOVE_FOUNDATION = (
    "medbatch.prompts",
    "medbatch.parsing",
    "medbatch.tasks",
    "medbatch.datasets",
    "medbatch.runners",
    "medbatch.snowflake",
    "medbatch.store",
    "medbatch.canary",
    "medbatch.reprompt",
    "medbatch.batch_jsonl",
    "medbatch.evaluation",
    "medbatch.report",
    "medbatch.pipeline",
    "medbatch.config",
    "medbatch.testing",
    "medbatch.cli",
)
_RESULTS = ("medbatch.store", "medbatch.evaluation", "medbatch.report")
_ORCHESTRATION = ("medbatch.pipeline", "medbatch.config", "medbatch.cli")

# (who, must not import, why)
RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (FOUNDATION, _ABOVE_FOUNDATION, "the foundation is imported by every layer"),
    (
        ("medbatch.prompts", "medbatch.parsing"),
        (
            "medbatch.tasks",
            "medbatch.datasets",
            "medbatch.runners",
            "medbatch.testing",
            *_RESULTS,
            *_ORCHESTRATION,
        ),
        "prompts and parsers are parts of a task",
    ),
    (
        ("medbatch.tasks",),
        ("medbatch.datasets", "medbatch.runners", "medbatch.testing", *_RESULTS, *_ORCHESTRATION),
        "a task is labels, prompts and a parser; it runs nothing",
    ),
    (
        ("medbatch.datasets",),
        ("medbatch.runners", "medbatch.testing", *_RESULTS, *_ORCHESTRATION),
        "a dataset yields records; it never knows who answers them",
    ),
    (
        ("medbatch.runners",),
        ("medbatch.datasets", "medbatch.tasks", *_RESULTS, *_ORCHESTRATION),
        "a runner answers requests; it never reads datasets or results",
    ),
    (
        ("medbatch.evaluation", "medbatch.report", "medbatch.store"),
        ("medbatch.runners", "medbatch.testing", *_ORCHESTRATION),
        "results are read the same whichever back-end wrote them",
    ),
    (
        ("medbatch.pipeline", "medbatch.config", "medbatch.testing"),
        ("medbatch.cli",),
        "the library never imports the CLI",
    ),
]
# Everything outside the CLI and the doubles: never imports either.
_LIBRARY_NOT = ("medbatch.cli", "medbatch.testing")

# (importer, imported): allowed, with the reason.
EXCEPTIONS = {
    (
        "medbatch.runners.transformers",
        "medbatch.testing.tiny_vlm",
    ): "the `tiny-random/...` model names build the tiny model on the fly (lazily)",
    (
        "medbatch.datasets.sample",
        "medbatch.testing.ecg_sample",
    ): "the pre-0.2 path of the bundled sample, a forwarding shim",
    (
        "medbatch.datasets.synthetic",
        "medbatch.testing.planted_copies",
    ): "the deprecated duplicates=/conflicts= keywords of the folder writer forward there",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = SRC.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports_of(source: str, module: str, *, is_package: bool) -> set[str]:
    """Every medbatch module `source` imports, anywhere in it."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from medbatch.testing import ecg_sample` imports the submodule; the package
            # counts only for the names it defines itself.
            submodules = {f"{base}.{a.name}" for a in node.names if _is_module(f"{base}.{a.name}")}
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
    return {name for name in found if name == "medbatch" or name.startswith("medbatch.")}


def _graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted((SRC / "medbatch").rglob("*.py")):
        module = _module_name(path)
        graph[module] = imports_of(
            path.read_text("utf-8"), module, is_package=path.name == "__init__.py"
        )
    return graph


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _is_private_runner_module(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 3 and parts[:2] == ["medbatch", "runners"] and parts[2].startswith("_")


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import that breaks a rule, as 'importer -> imported (why)'."""
    found = []
    for importer, imported in sorted((a, b) for a, targets in graph.items() for b in targets):
        if (importer, imported) in EXCEPTIONS:
            continue
        for who, forbidden, why in RULES:
            if _within(importer, who) and _within(imported, forbidden):
                found.append(f"{importer} -> {imported} ({why})")
        if not _within(importer, _LIBRARY_NOT) and _within(imported, _LIBRARY_NOT):
            found.append(
                f"{importer} -> {imported} (the library never imports the CLI or the doubles)"
            )
        if _within(importer, ("medbatch.runners",)):
            # A runner imports the contract (`runners.base`), its own modules and the
            # private helpers (`runners._*`: settings, retry, event loop, `_hf`), never
            # another runner; a private helper never imports a runner.
            own = ".".join(importer.split(".")[:3])
            if (
                _within(imported, ("medbatch.runners",))
                and not _within(imported, ("medbatch.runners.base", own))
                and not _is_private_runner_module(imported)
                and importer != "medbatch.runners"
            ):
                found.append(f"{importer} -> {imported} (runners never import each other)")
    return found


def test_the_source_follows_the_import_rules() -> None:
    graph = _graph()
    assert {"medbatch.pipeline", "medbatch.runners.base"} <= set(graph)
    assert violations(graph) == []


def test_every_exception_is_still_needed() -> None:
    graph = _graph()
    stale = [pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], set())]
    assert stale == []


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        (
            "medbatch.runners.vllm",
            "from medbatch.datasets.base import Dataset",
            "runner answers requests",
        ),
        ("medbatch.runners.vllm", "import medbatch.runners.openai", "each other"),
        (
            "medbatch.runners._openai_config",
            "from medbatch.runners.openai import OpenAICompatibleRunner",
            "each other",
        ),
        ("medbatch.evaluation", "from medbatch.runners.base import BatchRunner", "back-end"),
        ("medbatch.pipeline.run", "from medbatch.cli.app import app", "never imports the CLI"),
        ("medbatch.store", "import medbatch.testing", "never imports the CLI or the doubles"),
        ("medbatch.records", "from medbatch.store import RunStore", "foundation"),
        ("medbatch.datasets.folder", "from ..runners import replay", "never knows"),
    ],
)
def test_a_forbidden_import_is_caught(module: str, line: str, expected: str) -> None:
    # Inside a function, as the lazy imports are: they count too.
    graph = _graph()
    is_package = (SRC.joinpath(*module.split(".")) / "__init__.py").exists()
    source = f"def later():\n    {line}\n"
    graph[module] = graph[module] | imports_of(source, module, is_package=is_package)
    found = violations(graph)
    assert any(v.startswith(f"{module} -> ") and expected in v for v in found), found


def test_relative_and_submodule_imports_resolve() -> None:
    found = imports_of(
        "from . import base\nfrom ..records import Record\n"
        "from medbatch.testing import ecg_sample\n",
        "medbatch.runners.vllm",
        is_package=False,
    )
    assert found == {"medbatch.runners.base", "medbatch.records", "medbatch.testing.ecg_sample"}


def test_every_package_says_what_it_holds_and_must_not_import() -> None:
    for init in sorted((SRC / "medbatch").rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text("utf-8")))
        assert doc, f"{init.relative_to(SRC)} has no docstring"
