"""Classify a folder of ECG images on this machine, with transformers or vLLM.

The folder is laid out as the Kaggle set `evilspirit05/ecg-analysis` (one sub-folder per
class: `normal_ecg_images/`, `abnormal_heartbeat_ecg_images/`, ...); the ECG task's folder
map turns folder names into labels. Results stream into a run directory: run the same
command again and finished records are skipped (resume).

With MedGemma (gated on the Hugging Face Hub: accept its licence and set `HF_TOKEN`):

    python examples/ecg_local.py --data path/to/ecg --model google/medgemma-4b-it
    python examples/ecg_local.py --data path/to/ecg --runner vllm --constrained   # Linux + GPU

Offline (synthetic ECG pages; a tiny random-weight Gemma 3 for transformers, or the fake
vLLM engine from `medbatch.testing.fake_vllm` for `--runner vllm`; answers are random):

    python examples/ecg_local.py --offline --output-dir /tmp/ecg-local
    python examples/ecg_local.py --offline --runner vllm --output-dir /tmp/ecg-local-vllm
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

import medbatch


def build_runner(name: str, model: str, *, offline: bool) -> medbatch.BatchRunner:
    """A `TransformersRunner` or a `VLLMRunner` for `model` (imports happen on start)."""
    if name == "vllm":
        from medbatch.runners.vllm import VLLMRunner

        return VLLMRunner(model=model, max_model_len=8192)
    from medbatch.runners.transformers import TransformersRunner

    # Offline pages are shrunk so the tiny model runs in seconds on a CPU.
    return TransformersRunner(model, max_image_side=128 if offline else None)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="ECG folder (Kaggle layout).")
    parser.add_argument("--runner", choices=("transformers", "vllm"), default="transformers")
    parser.add_argument("--model", help="Hub id or folder (default: google/medgemma-4b-it).")
    parser.add_argument("--prompt", default=None, help="Prompt version: cot-v1 or direct-v1.")
    parser.add_argument("--constrained", action="store_true", help="Answers must be labels.")
    parser.add_argument("--per-class", type=int, default=None, help="Seeded sample per class.")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/ecg-local"))
    parser.add_argument("--offline", action="store_true", help="Synthetic ECGs, tiny model.")
    args = parser.parse_args(argv)

    task = medbatch.get_task("ecg", prompt=args.prompt)
    model = args.model or "google/medgemma-4b-it"
    data = args.data
    with ExitStack() as stack:
        if args.offline:
            from medbatch.datasets.synthetic import write_synthetic_ecg_dataset

            data = write_synthetic_ecg_dataset(
                args.output_dir / "data", n=8, seed=1, size=(553, 393), overwrite=True
            )
            if args.runner == "vllm":
                from medbatch.testing.fake_vllm import fake_vllm

                stack.enter_context(fake_vllm())
            elif args.model is None:
                from medbatch.testing.tiny_vlm import tiny_vlm

                model = str(tiny_vlm(args.output_dir / "tiny-vlm"))
            args.constrained = True  # a random model never ends a free-text answer
        if data is None:
            parser.error("--data is required unless --offline")
        dataset: medbatch.Dataset = medbatch.ImageFolderDataset(
            data, task.folder_map, labels=task.labels
        )
        if args.per_class:
            dataset = dataset.sample(args.per_class, seed=0)
        runner = build_runner(args.runner, model, offline=args.offline)
        result = medbatch.classify(
            dataset, task, runner, store=args.output_dir / "run", constrained=args.constrained
        )
    print(result.predictions[["record_id", "truth", "label", "status"]].to_string(index=False))
    print(f"accuracy {result.metrics['accuracy']:.2f} (n={len(result.predictions)}), "
          f"{result.skipped} reused; results in {result.run_dir}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
