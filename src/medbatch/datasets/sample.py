"""A small recorded ECG run bundled with medbatch: 16 records and their model answers.

The records point at stage paths in the original notebook's layout; the answers were
written in the style of MedGemma answering the notebook's prompt (some right, some wrong,
one cut off by `max_tokens`). With `ReplayRunner` they make a complete offline run.
"""

from __future__ import annotations

import json
from importlib.resources import files

from medbatch.datasets.base import ListDataset
from medbatch.records import ImageRef, InferenceResponse, Record
from medbatch.runners.replay import ReplayRunner
from medbatch.tasks.ecg import ECG_LABELS

__all__ = ["load_ecg_sample"]


def load_ecg_sample() -> tuple[ListDataset, ReplayRunner]:
    """The bundled sample as a dataset and a runner that replays its answers."""
    text = files("medbatch.data").joinpath("ecg_sample_answers.jsonl").read_text("utf-8")
    records: list[Record] = []
    responses: list[InferenceResponse] = []
    for line in text.splitlines():
        row = json.loads(line)
        records.append(
            Record(
                id=row["record_id"],
                image=ImageRef.from_stage(row["stage_path"]),
                label=row["truth"],
            )
        )
        responses.append(
            InferenceResponse(
                record_id=row["record_id"],
                text=row["text"],
                finish_reason=row["finish_reason"],
            )
        )
    dataset = ListDataset(records, labels=ECG_LABELS)
    return dataset, ReplayRunner(responses, model_id="medgemma-4b-it (recorded sample)")
