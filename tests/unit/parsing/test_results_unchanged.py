"""A speed change leaves every parse result as it was.

`tests/data/parser_results.jsonl` holds the ECG parser's full `ParseResult` for
every answer of the five parser data sets (written by
`tests/data/generate_parser_results.py`; first from the code at ff0c44b, last after the
issue 15 rules of pool D). A change meant to alter results regenerates it
on purpose; any other difference is a regression.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[2] / "data"


def _generator() -> ModuleType:
    """The script that wrote the pinned file: its data sets and its row, not a copy."""
    path = DATA / "generate_parser_results.py"
    spec = importlib.util.spec_from_file_location("generate_parser_results", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()
SOURCES: tuple[str, ...] = GENERATOR.SOURCES


def _pinned() -> list[dict[str, Any]]:
    with GENERATOR.OUTPUT.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_pinned_results_cover_every_answer() -> None:
    pinned = {(row["source"], row["id"]) for row in _pinned()}
    answers = {(name, item["id"]) for name in SOURCES for item in GENERATOR.answers(name)}
    assert pinned == answers


@pytest.mark.parametrize("source", SOURCES)
def test_parse_results_unchanged(source: str) -> None:
    expected = {row["id"]: row for row in _pinned() if row["source"] == source}
    changed = []
    for item in GENERATOR.answers(source):
        if GENERATOR.result_row(source, item) != expected[item["id"]]:
            # Only ids, never the held-out answers' text or expected labels.
            changed.append(item["id"])
    assert not changed, f"{len(changed)} results changed in {source}: {changed[:20]}"
