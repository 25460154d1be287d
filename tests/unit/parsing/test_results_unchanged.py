"""A speed change leaves every parse result as it was.

`tests/data/parser_results.jsonl` holds the ECG parser's full `ParseResult` for
every answer of the five parser data sets (written by
`tests/data/generate_parser_results.py`; first from the code at ff0c44b, last after the
issue 15 rules of pool D). A change meant to alter results regenerates it
on purpose; any other difference is a regression.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medbatch.tasks.ecg import ECG_TASK

DATA = Path(__file__).resolve().parents[2] / "data"
PINNED = DATA / "parser_results.jsonl"
SOURCES = (
    "parser_corpus.jsonl",
    "parser_tuning.jsonl",
    "parser_pool_c.jsonl",
    "parser_pool_d.jsonl",
    "parser_heldout.jsonl",
)


def _lines(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_pinned_results_cover_every_answer() -> None:
    pinned = {(row["source"], row["id"]) for row in _lines(PINNED)}
    answers = {(name, item["id"]) for name in SOURCES for item in _lines(DATA / name)}
    assert pinned == answers


@pytest.mark.parametrize("source", SOURCES)
def test_parse_results_unchanged(source: str) -> None:
    parser = ECG_TASK.parser
    expected = {row["id"]: row for row in _lines(PINNED) if row["source"] == source}
    changed = []
    for item in _lines(DATA / source):
        result = parser.parse(item["text"], finish_reason=item["finish_reason"])
        got = {"source": source, "id": item["id"], **result.model_dump(mode="json")}
        if got != expected[item["id"]]:
            # Only ids, never the held-out answers' text or expected labels.
            changed.append(item["id"])
    assert not changed, f"{len(changed)} results changed in {source}: {changed[:20]}"
