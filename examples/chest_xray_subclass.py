"""A new modality by subclassing: NORMAL vs PNEUMONIA chest X-rays.

Shows the two things a new modality needs: a `LabelSet` (the classes, with descriptions and
synonyms) and a `PromptTemplate` subclass (here the image goes *before* the question, and
there is no system turn). Bundled into a `Task`, they run through the same `classify` as
the ECG task. The user code is the block between the two `# ---` markers (under 50 lines).

Run it on the Kaggle chest X-ray set (`paultimothymooney/chest-xray-pneumonia`, laid out as
`chest_xray/test/NORMAL/*.jpeg` and `chest_xray/test/PNEUMONIA/*.jpeg`) with MedGemma:

    python examples/chest_xray_subclass.py --data chest_xray/test --model google/medgemma-4b-it

or offline, with a few generated grey "X-rays" and a stand-in runner that looks at brightness
(no model, no download; its answers mean nothing clinically):

    python examples/chest_xray_subclass.py --offline --output-dir /tmp/cxr
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import medbatch
from medbatch import Label, LabelSet, PromptTemplate, Record
from medbatch.parsing.answer import FinalAnswerParser
from medbatch.records import ChatMessage, ImagePart, InferenceRequest, TextPart

# --- user code: the whole new modality ---------------------------------------------------
CXR_LABELS = LabelSet(
    labels=(
        Label(name="NORMAL", description="Clear lungs, no focal opacity",
              synonyms=("no pneumonia", "clear lungs")),
        Label(name="PNEUMONIA", description="Focal or patchy opacity or consolidation",
              synonyms=("consolidation", "lobar pneumonia", "bronchopneumonia")),
    )
)  # fmt: skip


class ChestXrayPrompt(PromptTemplate):
    """One user turn: the image first, then the question and the options."""

    def __init__(self, labels: LabelSet) -> None:
        self.text = (
            "Is there pneumonia on this frontal chest X-ray? Classify it as ONE of:\n"
            f"{labels.options_text()}\nEnd with: FINAL CLASSIFICATION: <label>"
        )

    def definition(self) -> dict[str, Any]:  # what the prompt fingerprint hashes
        return {"user": self.text, "image_position": "before"}

    def render(self, record: Record) -> tuple[ChatMessage, ...]:
        parts = (ImagePart(image=record.image), TextPart(text=self.text))
        return (ChatMessage(role="user", content=parts),)


CXR_TASK = medbatch.Task(
    name="chest-xray",
    labels=CXR_LABELS,
    prompts={"v1": ChestXrayPrompt(CXR_LABELS)},
    prompt_version="v1",
    parser=FinalAnswerParser(CXR_LABELS),
    folder_map={"NORMAL": "NORMAL", "PNEUMONIA": "PNEUMONIA"},  # chest_xray/test/<class>/
)


def classify_folder(data: Path, runner: medbatch.BatchRunner, out: Path) -> medbatch.RunResult:
    dataset = medbatch.ImageFolderDataset(data, CXR_TASK.folder_map, labels=CXR_LABELS)
    return medbatch.classify(dataset, CXR_TASK, runner, store=out)


# --- end of user code: below, only the command line and the offline stand-ins ------------


def write_fake_xrays(root: Path, per_class: int = 3) -> Path:
    """Grey 128 px "X-rays": two dark lung fields; PNEUMONIA ones get a bright opacity."""
    from PIL import Image, ImageDraw, ImageFilter

    for label in CXR_LABELS.names:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("L", (128, 128), 170)
            draw = ImageDraw.Draw(image)
            draw.ellipse((18, 20, 58, 110), fill=60)  # right lung
            draw.ellipse((70, 20, 110, 110), fill=60)  # left lung
            if label == "PNEUMONIA":
                draw.ellipse((24 + 4 * i, 60, 52 + 4 * i, 96), fill=200)  # lower-lobe opacity
            image = image.filter(ImageFilter.GaussianBlur(3))
            image.save(root / label / f"{label.lower()}-{i}.png")
    return root


def brightness_answer(request: InferenceRequest) -> str:
    """A stand-in model: bright lung fields read as pneumonia. Not a classifier."""
    from PIL import Image, ImageStat

    image = Image.open(io.BytesIO(request.images[0].read_bytes())).convert("L")
    lungs = image.crop((18, 50, 110, 110))
    verdict = "PNEUMONIA" if ImageStat.Stat(lungs).mean[0] > 95 else "NORMAL"
    return f"The lung fields were inspected.\nFINAL CLASSIFICATION: {verdict}"


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="Folder with NORMAL/ and PNEUMONIA/.")
    parser.add_argument("--model", default="google/medgemma-4b-it", help="Hub id or folder.")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/chest-xray"))
    parser.add_argument("--offline", action="store_true", help="Fake X-rays, stand-in runner.")
    args = parser.parse_args(argv)

    runner: medbatch.BatchRunner
    if args.offline:
        from medbatch.testing import FunctionRunner

        data = write_fake_xrays(args.output_dir / "fake-xrays")
        runner = FunctionRunner(brightness_answer, model_id="brightness-stand-in")
    else:
        if args.data is None:
            parser.error("--data is required unless --offline")
        from medbatch.runners.transformers import TransformersRunner

        data, runner = args.data, TransformersRunner(args.model)
    result = classify_folder(data, runner, args.output_dir / "run")
    print(result.predictions[["record_id", "truth", "label", "status"]].to_string(index=False))
    print(f"accuracy {result.metrics['accuracy']:.2f}, results in {result.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
