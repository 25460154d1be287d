"""A small illustrative ECG run bundled with medbatch: 16 records and answers to replay.

The records point at stage paths in the original notebook's layout. The answers are
**illustrative**: written by hand in the style of MedGemma answering the notebook's prompt
(some right, some wrong, one cut off by `max_tokens`), not produced by a model. With
`ReplayRunner` they make a complete offline run; its metrics describe this hand-written
sample, never MedGemma, and the report says so in a banner.
"""

from __future__ import annotations

import json
from importlib.resources import files

from medbatch.datasets.base import ListDataset
from medbatch.records import ImageRef, InferenceResponse, Record
from medbatch.runners.replay import ReplayRunner
from medbatch.tasks.ecg import ECG_LABELS

__all__ = ["ILLUSTRATIVE_MODEL_ID", "load_ecg_sample"]

ILLUSTRATIVE_MODEL_ID = "illustrative/medgemma-style-answers"
"""The model id of the bundled answers: they were written in MedGemma's style, not by it."""


def load_ecg_sample() -> tuple[ListDataset, ReplayRunner]:
    """The bundled sample as a dataset and a runner that replays its illustrative answers.

    The runner's `model_id` is `ILLUSTRATIVE_MODEL_ID`: the answers are not model output.
    """
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
    return dataset, ReplayRunner(responses, model_id=ILLUSTRATIVE_MODEL_ID)
