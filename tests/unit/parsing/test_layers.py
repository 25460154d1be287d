"""The parser's modules import only what their docstrings allow (issue 18: one concern each)."""

from __future__ import annotations

import ast
import importlib

import pytest

ALLOWED = {
    "medbatch.parsing.markdown": set(),
    "medbatch.parsing.cues": set(),
    "medbatch.parsing.scope": {"medbatch.parsing.cues"},
    "medbatch.parsing.mentions": {"medbatch.labels", "medbatch.parsing.cues"},
    "medbatch.parsing.answer": {
        "medbatch.labels",
        "medbatch.records",
        "medbatch.parsing.base",
        "medbatch.parsing.json",
        "medbatch.parsing.cues",
        "medbatch.parsing.markdown",
        "medbatch.parsing.mentions",
        "medbatch.parsing.scope",
    },
}


def _medbatch_imports(module_name: str) -> set[str]:
    module = importlib.import_module(module_name)
    assert module.__file__ is not None
    with open(module.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "medbatch"}


@pytest.mark.parametrize("module_name", sorted(ALLOWED))
def test_a_parser_module_imports_only_its_layer(module_name: str) -> None:
    assert _medbatch_imports(module_name) <= ALLOWED[module_name]


@pytest.mark.parametrize("module_name", sorted(ALLOWED))
def test_a_parser_module_says_what_it_holds_and_must_not_import(module_name: str) -> None:
    doc = importlib.import_module(module_name).__doc__ or ""
    assert "Must not import" in doc


def test_no_module_of_the_parser_is_over_500_lines() -> None:
    for module_name in ALLOWED:
        module = importlib.import_module(module_name)
        assert module.__file__ is not None
        with open(module.__file__, encoding="utf-8") as handle:
            assert sum(1 for _ in handle) <= 500, module_name
