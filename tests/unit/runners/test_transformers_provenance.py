"""Provenance and prompt consistency of the transformers runner on the tiny Gemma 3."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from medbatch import ImageRef, ListDataset, Record, classify, get_task
from medbatch.profiles import GENERIC
from medbatch.runners.transformers import TransformersRunner

TASK = get_task("ecg", prompt="direct-v1")


def _dataset() -> ListDataset:
    records = []
    for i, label in enumerate(TASK.labels.names):
        buffer = io.BytesIO()
        Image.new("RGB", (120, 80), (40 * i, 200, 90)).save(buffer, format="PNG")
        records.append(
            Record(id=f"r{i}", image=ImageRef.from_bytes(buffer.getvalue()), label=label)
        )
    return ListDataset(records, labels=TASK.labels)


def test_rows_carry_what_the_model_was_shown(tiny_model_path: Path) -> None:
    with TransformersRunner(tiny_model_path, batch_size=4) as runner:
        folded = classify(
            _dataset(), TASK, runner, params=TASK.params.model_copy(update={"max_tokens": 4})
        )
        native = classify(
            _dataset(),
            TASK,
            runner,
            params=TASK.params.model_copy(update={"max_tokens": 4}),
            profile=GENERIC,
        )
    assert folded.manifest.profile["name"] == "gemma3"
    rows = folded.predictions["metadata"].map(json.loads)
    assert all(len(row["rendered_prompt_sha256"]) == 64 for row in rows)
    assert all(row["image_sizes"] == [[120, 80]] for row in rows)
    # Folding the system text on the client gives exactly what Gemma 3's chat template
    # does with a system message: the model sees the same prompt either way.
    native_rows = native.predictions["metadata"].map(json.loads)
    assert [r["rendered_prompt_sha256"] for r in rows] == [
        r["rendered_prompt_sha256"] for r in native_rows
    ]
    assert list(folded.predictions["text"]) == list(native.predictions["text"])
