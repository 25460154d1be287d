"""Classify by likelihood (`mode="score"`) vs constrained generation vs free text.

Run:
    python benchmarks/score_mode.py                    # the 4 tiny architectures, CPU
    python benchmarks/score_mode.py --architectures gemma3 --images 8

On each tiny random-weight model of `medbatch.testing.tiny_vlm` (answers are random; only
speed is measured), the same records (synthetic 640 x 480 JPEGs) are answered by one
`TransformersRunner` in four ways, each timed 3 times, medians reported, all in one run:

- `score`: `LabelConstraint(mode="score")`: one prefill of the prompt plus the K label
  continuations; no decode loop.
- `choice (generate)`: constrained generation of one label (the label trie as
  `prefix_allowed_tokens_fn`, `score_labels=False`, so `generate` runs).
- `json (generate)`: constrained `{"reasoning": ..., "label": ...}`, 48 new tokens at most,
  with label scores.
- `free text`: no constraint, 64 new tokens (a real MedGemma answer is 200-400).

Images/s counts the whole `runner.run` (image decoding and preprocessing included). Prints a
table and one `BENCH {json}` line per architecture (score vs constrained choice generation).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    LabelConstraint,
    TextPart,
)
from medbatch.runners.transformers import TransformersRunner
from medbatch.testing.tiny_vlm import ECG_LABELS, TINY_ARCHITECTURES, tiny_vlm

PROMPT = "Classify this 12-lead ECG as ONE of: NORMAL, ABNORMAL_HEARTBEAT, MYOCARDIAL_INFARCTION."
MODES: dict[str, tuple[LabelConstraint | None, GenerationParams, bool]] = {
    "score": (LabelConstraint(labels=ECG_LABELS, mode="score"), GenerationParams(), True),
    "choice (generate)": (LabelConstraint(labels=ECG_LABELS), GenerationParams(), False),
    "json (generate)": (
        LabelConstraint(labels=ECG_LABELS, mode="json", reasoning=True),
        GenerationParams(max_tokens=48),
        True,
    ),
    "free text": (None, GenerationParams(max_tokens=64), True),
}


def _jpeg(seed: int) -> bytes:
    image = Image.new("RGB", (640, 480), (255, 250 - seed % 5, 250))
    draw = ImageDraw.Draw(image)
    for x in range(0, 640, 16):
        draw.line((x, 240 + (seed * x) % 60, x + 16, 240 - (seed + x) % 60), fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _requests(
    images: list[bytes], constraint: LabelConstraint | None, params: GenerationParams
) -> list[InferenceRequest]:
    return [
        InferenceRequest(
            record_id=f"r{index}",
            messages=(
                ChatMessage(
                    role="user",
                    content=(ImagePart(image=ImageRef.from_bytes(data)), TextPart(text=PROMPT)),
                ),
            ),
            params=params,
            constraint=constraint,
        )
        for index, data in enumerate(images)
    ]


def _images_per_s(runner: TransformersRunner, requests: list[InferenceRequest]) -> float:
    started = time.perf_counter()
    responses = list(runner.run(requests))
    elapsed = time.perf_counter() - started
    failed = [response for response in responses if response.error is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} records failed: {failed[0].error}")
    return len(requests) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(TINY_ARCHITECTURES))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    images = [_jpeg(seed) for seed in range(args.images)]
    print(f"{args.images} images, batch {args.batch_size}, median of {args.repeat} (images/s)")
    header = f"{'architecture':<12}" + "".join(f"{mode:>20}" for mode in MODES)
    print(header)
    with tempfile.TemporaryDirectory() as folder:
        for architecture in args.architectures:
            path = tiny_vlm(Path(folder) / architecture, architecture=architecture)
            medians: dict[str, float] = {}
            for mode, (constraint, params, score_labels) in MODES.items():
                with TransformersRunner(
                    path, batch_size=args.batch_size, device="cpu", score_labels=score_labels
                ) as runner:
                    requests = _requests(images, constraint, params)
                    _images_per_s(runner, requests[: args.batch_size])  # warm-up
                    runs = [_images_per_s(runner, requests) for _ in range(args.repeat)]
                medians[mode] = statistics.median(runs)
            print(f"{architecture:<12}" + "".join(f"{medians[m]:>20.2f}" for m in MODES))
            ratio = medians["score"] / medians["choice (generate)"]
            payload = {
                "figure": f"score mode vs constrained generation, tiny {architecture} (images/s)",
                "medbatch": round(medians["score"], 3),
                "baseline": round(medians["choice (generate)"], 3),
                "unit": "images/s",
                "ratio": round(ratio, 3),
                "free_text": round(medians["free text"], 3),
                "json": round(medians["json (generate)"], 3),
            }
            print("BENCH " + json.dumps(payload))


if __name__ == "__main__":
    main()
