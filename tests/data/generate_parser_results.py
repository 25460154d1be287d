"""Record what the ECG task's parser reads from every answer in the parser data sets.

The output, `parser_results.jsonl`, pins the parser's full `ParseResult` (label,
status, method, evidence, span) as the parser last meant to read them, so a speed change
can prove it leaves every result unchanged (`tests/unit/parsing/test_results_unchanged.py`).
Rerun only on purpose, when a parser change is meant to alter results:

    PYTHONPATH=src python tests/data/generate_parser_results.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medbatch.tasks.ecg import ECG_TASK

DATA = Path(__file__).resolve().parent
SOURCES = (
    "parser_corpus.jsonl",
    "parser_tuning.jsonl",
    "parser_pool_c.jsonl",
    "parser_pool_d.jsonl",
    "parser_heldout.jsonl",
)
OUTPUT = DATA / "parser_results.jsonl"


def answers(name: str) -> list[dict[str, Any]]:
    """The answers of one data set (one JSON object per non-blank line)."""
    with (DATA / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def result_row(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """What the ECG task's parser reads from one answer, as pinned: source, id, result."""
    result = ECG_TASK.parser.parse(item["text"], finish_reason=item["finish_reason"])
    return {"source": name, "id": item["id"], **result.model_dump(mode="json")}


def main() -> None:
    """Write one line per answer: source file, answer id and the parse result."""
    with OUTPUT.open("w", encoding="utf-8") as out:
        for name in SOURCES:
            for item in answers(name):
                out.write(json.dumps(result_row(name, item), sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
