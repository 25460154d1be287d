"""`medbatch demo`: the whole product offline, in one command, on a laptop.

```
synthetic ECG pages ──▶ ImageFolderDataset ──dedupe + stratified sample──▶ classify()
  (write_synthetic_ecg_dataset)                                             │ TransformersRunner
                                                                            │ + tiny random VLM
                                                                            ▼ constrained labels
medbatch-demo/run/ ◀── evaluate() (95% CIs) ◀── predictions.parquet ◀──────┘
  report.html  metrics.json  figures/*.png  predictions.parquet  manifest.json
```

No network, no credentials, no downloads. `--replay` replays the bundled illustrative answers
instead (written in MedGemma's style, not model output; no torch needed).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel
from rich.text import Text

from medbatch.cli.app import app, console, flag, handle_errors
from medbatch.cli.evaluate import evaluation_table, status_line
from medbatch.errors import MissingDependencyError
from medbatch.terminal import markup

__all__: list[str] = []

# Small pages render fast; the tiny model sees 64 px anyway, and the report's thumbnails
# stay legible at this size.
_PAGE_SIZE = (830, 590)
_PLANTED_COPIES = 2

_REAL_MODELS = (
    "It runs the real code path (chat template,\nimages, batching, constrained decoding, "
    "label scores). For real numbers\nchange only the runner:\n\n"
    '  TransformersRunner("google/medgemma-4b-it")     # GPU; medbatch[local]\n'
    '  VLLMRunner(model="google/medgemma-4b-it")       # medbatch[vllm]\n'
    '  OpenAICompatibleRunner(base_url="http://HOST:8000/v1",\n'
    '                         model="google/medgemma-4b-it")\n'
    '  SnowflakeBatchRunner(database="DB", model="MEDGEMMA_4B_IT",\n'
    '                       version="V1", compute_pool="GPU_POOL")\n\n'
    "or describe the run in TOML: medbatch run CONFIG.toml"
)


@app.command("demo")
@handle_errors
def demo_command(
    *,
    output_dir: Path = typer.Option(
        Path("medbatch-demo"), "--output-dir", "-o", help="Where to write data, model and run."
    ),
    per_class: int = typer.Option(
        8, "--per-class", min=1, max=200, help="Synthetic ECG pages per class."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the pages, the sample and the model."),
    keep_duplicates: bool = flag(
        False, "--keep-duplicates", help="Keep the planted copies of images when sampling."
    ),
    replay: bool = flag(
        False,
        "--replay",
        help="Replay the bundled illustrative answers instead (written in MedGemma's style, "
        "not model output; no torch needed).",
    ),
    open_report: bool = flag(False, "--open", help="Open the report in a browser."),
) -> None:
    """Run the offline demo: synthetic ECGs, a tiny random-weight VLM, evaluation and report.

    Generates a few dozen synthetic 12-lead ECG pages, builds a tiny random-weight Gemma 3
    model, classifies the pages with constrained decoding (answers are always valid labels),
    evaluates with 95% confidence intervals and writes report.html, metrics.json and
    predictions.parquet. Needs torch and transformers (the "local" extra of medbatch);
    --replay needs neither.

    Example: medbatch demo -o /tmp/medbatch-demo --open
    """
    started = time.perf_counter()
    if replay:
        run_dir, title = _replay_run(output_dir)
    else:
        run_dir, title = _tiny_model_run(output_dir, per_class, seed, keep_duplicates)

    from medbatch.evaluation import evaluate
    from medbatch.report import write_report

    evaluation = evaluate(run_dir, seed=seed)
    report = write_report(run_dir, evaluation=evaluation)
    console.print(evaluation_table(evaluation, title=title))
    console.print(status_line(evaluation), highlight=False)
    for note in evaluation.notes:
        console.print(f"[yellow]note:[/] {markup(note)}", highlight=False)
    console.print(
        f"\nReport:      [bold]{markup(str(report))}[/]\n"
        f"Metrics:     {markup(str(run_dir / 'metrics.json'))}\n"
        f"Predictions: {markup(str(run_dir / 'predictions.parquet'))}\n"
        f"Done in {time.perf_counter() - started:.0f} s.",
        highlight=False,
        soft_wrap=True,  # paths stay whole, so they can be copied
    )
    if replay:
        console.print(
            "These answers are illustrative: written by hand in MedGemma's style for the "
            "notebook's prompt, not produced by a model. The numbers above describe that "
            "sample, not MedGemma."
        )
    else:
        message = Text.assemble(
            ("The tiny model's answers are random: ", "bold red"),
            "its weights are noise, so every\nnumber above is chance level. ",
            _REAL_MODELS,
        )
        console.print(Panel(message, title="next step", expand=False), highlight=False)
    if open_report:
        import webbrowser

        webbrowser.open(report.resolve().as_uri())


def _replay_run(output_dir: Path) -> tuple[Path, str]:
    from medbatch.pipeline import classify
    from medbatch.tasks.registry import get_task
    from medbatch.testing.ecg_sample import load_ecg_sample

    dataset, runner = load_ecg_sample()
    run_dir = output_dir / "replay-run"
    classify(
        dataset,
        get_task("ecg"),
        runner,
        store=run_dir,
        resume=False,
        progress=False,
        manifest_extra={
            "illustrative": True,
            "demo": {"kind": "illustrative-replay", "random_weights": False},
        },
    )
    return run_dir, "ECG demo: illustrative answers (16 records, not model output)"


def _tiny_model_run(
    output_dir: Path, per_class: int, seed: int, keep_duplicates: bool
) -> tuple[Path, str]:
    from medbatch.datasets.base import ListDataset
    from medbatch.datasets.folder import ImageFolderDataset
    from medbatch.datasets.sampling import sample_dataset
    from medbatch.datasets.synthetic import write_synthetic_ecg_dataset
    from medbatch.pipeline import classify
    from medbatch.records import GenerationParams
    from medbatch.tasks.registry import get_task
    from medbatch.testing.planted_copies import plant_copies

    runner_cls, tiny_vlm = _local_stack()
    task = get_task("ecg")
    with console.status("Writing synthetic ECG pages and building the tiny model..."):
        data_root = write_synthetic_ecg_dataset(
            output_dir / "data",
            n=4 * per_class,
            seed=seed,
            size=_PAGE_SIZE,
            overwrite=True,
        )
        # A couple of byte-identical copies, as public sets have: the sample drops them
        # (or, with --keep-duplicates, the report flags them).
        plant_copies(data_root, duplicates=_PLANTED_COPIES)
        folder = ImageFolderDataset(data_root, task.folder_map, labels=task.labels)
        dataset, sampling = sample_dataset(
            folder, per_class=per_class, seed=seed, keep_duplicates=keep_duplicates
        )
        model = tiny_vlm(output_dir / "tiny-gemma3", seed=seed)
    console.print(
        f"{len(dataset)} synthetic ECG pages in {data_root} "
        f"({sampling.get('duplicates_dropped', 0)} planted copies dropped); "
        f"tiny random-weight model in {model}",
        highlight=False,
        markup=False,
    )
    # Shuffled (seeded) as the notebook did, so each batch mixes classes.
    records = list(dataset)
    random.Random(seed).shuffle(records)
    dataset = ListDataset(records, labels=task.labels)
    runner = runner_cls(model, device="cpu", batch_size=8, num_image_workers=2)
    run_dir = output_dir / "run"
    classify(
        dataset,
        task,
        runner,
        store=run_dir,
        resume=False,
        constrained=True,
        # Sampled, not greedy: a random model decoded greedily gives one label for every
        # page, which would leave most of the report empty. Seeded, so reruns agree.
        params=GenerationParams(temperature=1.0, seed=seed, max_tokens=16),
        progress=True,
        manifest_extra={
            "sampling": sampling,
            "images_root": str(data_root.resolve()),
            "demo": {"kind": "tiny-random-vlm", "random_weights": True},
        },
    )
    return run_dir, "ECG demo: tiny random-weight model (answers are random)"


def _local_stack() -> tuple[Any, Any]:
    """TransformersRunner and tiny_vlm, or one clear error naming both ways forward."""
    try:
        import transformers

        from medbatch.runners.transformers import TransformersRunner
        from medbatch.testing.tiny_vlm import tiny_vlm
    except ImportError as exc:
        error = MissingDependencyError("medbatch demo", "torch and transformers", "local")
        error.args = (
            f"{error.args[0]}, or replay the illustrative sample without them: "
            "medbatch demo --replay",
        )
        raise error from exc
    # The tiny model is written and loaded in milliseconds; transformers' own progress bars
    # for it would only clutter the demo's output.
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return TransformersRunner, tiny_vlm
