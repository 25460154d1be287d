"""Core commands: tasks, run."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from medbatch.cli.app import (
    EXIT_FAILED,
    EXIT_RECORDS_FAILED,
    app,
    console,
    err_console,
    flag,
    handle_errors,
)
from medbatch.terminal import markup

if TYPE_CHECKING:
    from medbatch.config import RunConfig
    from medbatch.datasets.base import Dataset
    from medbatch.tasks.base import Task

__all__ = ["run_dataset"]


@app.command("tasks")
@handle_errors
def tasks_command() -> None:
    """List the registered tasks, their labels and prompt versions.

    Example: medbatch tasks
    """
    from medbatch.tasks.registry import get_task, list_tasks

    table = Table(title="Tasks", header_style="bold")
    table.add_column("task")
    table.add_column("labels")
    table.add_column("prompts")
    table.add_column("description")
    for name in list_tasks():
        task = get_task(name)
        prompts = ", ".join(
            f"{version}{' (default)' if version == task.prompt_version else ''}"
            for version in task.prompts
        )
        cells = (name, ", ".join(task.labels.names), prompts, task.description)
        table.add_row(*(markup(cell) for cell in cells))
    console.print(table)


@app.command("run")
@handle_errors
def run_command(
    config: Path = typer.Argument(..., help="Run configuration (TOML).", metavar="CONFIG"),
    *,
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Reuse answers already in the run directory."
    ),
    retry_failed: bool = flag(
        False,
        "--retry-failed",
        help="With --resume, run again failed records that may succeed on a new try.",
    ),
    retry_all_failed: bool = flag(
        False,
        "--retry-all-failed",
        help="Like --retry-failed, and also errors marked not retryable (e.g. a 400).",
    ),
    add_to_run: bool = flag(
        False,
        "--add-to-run",
        help="Add to an output_dir that holds a run of another model, prompt, params or "
        "dataset (refused otherwise).",
    ),
    limit: int | None = typer.Option(
        None, "--limit", min=1, help="Only the first N records (N >= 1)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
    per_class: int | None = typer.Option(
        None, "--per-class", min=1, help="N records per label, stratified (overrides config)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the sample (overrides config)."),
    keep_duplicates: bool = flag(
        False, "--keep-duplicates", help="Keep copies of the same image when sampling."
    ),
    skip_canary: bool = flag(
        False, "--skip-canary", help="Do not run a canary subset before an expensive job."
    ),
    reprompt: bool = flag(
        False, "--reprompt", help="Ask once more, for the label only, when no verdict is found."
    ),
    output_dir: Path | None = typer.Option(
        None, "--output-dir", "-o", help="Run directory (overrides the config's output_dir)."
    ),
    prompt: str | None = typer.Option(
        None, "--prompt", help="Prompt version (overrides [task] prompt), e.g. direct-v1."
    ),
    constrained: bool | None = typer.Option(
        None,
        "--constrained/--unconstrained",
        help="Constrain answers to the labels, or let the model write free text (overrides "
        "the config's constrained; a constrained run uses the task's constrained prompt).",
    ),
) -> None:
    """Run a classification described by a TOML config.

    With --per-class N, a stratified, seeded sample of N records per label is run; copies of
    the same image are dropped first unless --keep-duplicates. The manifest records both.
    Expensive runners (Snowflake, vLLM, servers) run an 8-record canary first.

    Exit status: 0 every record answered; 3 finished but some records failed (rerun with
    --resume --retry-failed); 1 no record answered or the run failed; 2 bad config or
    dataset; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM). After 130 or 143 the same
    command with --resume goes on where it stopped.

    Example: medbatch run examples/skin_lesion_config.toml --per-class 25 --seed 1

    Example: medbatch run my_run.toml --prompt direct-v1 -o runs/ecg-direct
    """
    from medbatch.config import load_config
    from medbatch.pipeline import classify

    run_config = load_config(config)
    if output_dir is not None:
        run_config = run_config.model_copy(update={"output_dir": output_dir})
    if constrained is not None:
        run_config = run_config.model_copy(update={"constrained": constrained})
    if prompt is not None:
        section = run_config.task.model_copy(update={"prompt": prompt})
        run_config = run_config.model_copy(update={"task": section})
    # First line of output: a relative output_dir ("../..") can land anywhere.
    console.print(
        f"Run directory: [bold]{markup(run_config.output_dir.resolve())}[/]",
        highlight=False,
        soft_wrap=True,
    )
    task = run_config.build_task()
    base = run_config.model_copy(update={"per_class": None}).build_dataset(task)
    images_root = _images_root(config, base, run_config.output_dir)
    hashing = (per_class or run_config.per_class) is not None and not keep_duplicates
    with _status(
        progress,
        "Hashing the images to drop copies before sampling..."
        if hashing
        else "Listing the records...",
    ):
        dataset, sampling = run_dataset(
            run_config,
            task,
            per_class=per_class,
            seed=seed,
            keep_duplicates=keep_duplicates,
            base=base,
        )
        from medbatch.datasets.validation import check_labels

        check_labels(dataset, task.labels, task=task.name, where=str(config))
    runner = run_config.build_runner()
    # Our progress bar says when the model loads; the hub's and transformers' own bars
    # ("Loading weights", downloads) would interleave with it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    result = classify(
        dataset,
        task,
        runner,
        store=run_config.output_dir,
        resume=resume,
        retry_failed="all" if retry_all_failed else retry_failed,
        add_to_run=add_to_run,
        limit=limit or run_config.limit,
        params=run_config.params,
        constrained=run_config.constrained,
        progress=progress,
        canary=0 if skip_canary else "auto",
        reprompt=reprompt,
        manifest_extra={"sampling": sampling}
        | ({"images_root": images_root} if images_root else {}),
    )
    _print_summary(result.run_dir, title=f"{task.name} · {runner.model_id}")
    console.print(
        f"Results in [bold]{markup(result.run_dir)}[/] ({result.skipped} reused from before)",
        soft_wrap=True,
    )
    if result.skipped and not result.manifest.counts.get("answered_now"):
        # The runner starts only for a record that needs it: none did.
        console.print(
            f"Nothing left to run: all {result.skipped} answers were reused; "
            "the model was not loaded."
        )
    errors = int(result.metrics["status_counts"].get("error", 0))
    if result.metrics["n"] and errors == result.metrics["n"]:
        kinds = result.predictions["error_kind"].value_counts().to_dict()
        message = (
            f"no record was answered: {errors} errors "
            f"({', '.join(f'{kind}: {count}' for kind, count in kinds.items())}); see "
            f"{result.run_dir}/predictions.jsonl, fix the cause, then rerun with "
            "--resume --retry-failed"
        )
        err_console.print(f"[bold red]error:[/] {markup(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=EXIT_FAILED)
    if errors:
        # Exit 0 would tell a scheduler all is well; 3 says "finished, some records failed".
        err_console.print(
            f"[bold yellow]warning:[/] {errors} of {result.metrics['n']} records failed; see "
            f"{markup(result.run_dir)}/predictions.jsonl, then rerun with --resume "
            f"--retry-failed (exit code {EXIT_RECORDS_FAILED})",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=EXIT_RECORDS_FAILED)


def run_dataset(
    run_config: RunConfig,
    task: Task,
    *,
    per_class: int | None = None,
    seed: int | None = None,
    keep_duplicates: bool = False,
    limit: int | None = None,
    base: Dataset | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """The records `medbatch run` would run, so `medbatch validate` checks the same ones.

    Args:
        run_config: The loaded config.
        task: Its task.
        per_class: Overrides the config's `per_class`.
        seed: Overrides the config's `seed`.
        keep_duplicates: Keep copies of the same image when sampling.
        limit: Only the first N records (as `classify(limit=)` does); the config's `limit`
            when None. `medbatch run` leaves this to `classify`.
        base: The config's dataset, unsampled, when the caller already built it.

    Returns:
        The dataset and the manifest's `sampling` facts.
    """
    from medbatch.datasets.base import SubsetDataset
    from medbatch.datasets.sampling import sample_dataset

    # Build unsampled, then dedupe before sampling, so N per class are N distinct images.
    if base is None:
        base = run_config.model_copy(update={"per_class": None}).build_dataset(task)
    dataset, sampling = sample_dataset(
        base,
        per_class=per_class or run_config.per_class,
        seed=run_config.seed if seed is None else seed,
        keep_duplicates=keep_duplicates,
    )
    if limit is not None:
        dataset = SubsetDataset(dataset, limit)
    return dataset, sampling


def _print_summary(run_dir: Path | None, *, title: str) -> None:
    """The headline metrics with 95% intervals and coverage, as `medbatch demo` prints."""
    from medbatch.cli.evaluate import evaluation_table, status_line
    from medbatch.evaluation import evaluate

    if run_dir is None:
        return
    evaluation = evaluate(run_dir)
    console.print(evaluation_table(evaluation, title=markup(title)))
    lines = status_line(evaluation).splitlines()
    console.print("\n".join(markup(line) for line in lines), highlight=False)
    for note in evaluation.notes:
        console.print(f"[yellow]note:[/] {markup(note)}", highlight=False)
    from medbatch.report import is_illustrative, is_random_model
    from medbatch.store import RunStore

    manifest = RunStore(run_dir).read_manifest()
    if is_random_model(manifest):
        console.print(
            "[bold red]The model's weights are random:[/] every number above is chance level.",
            highlight=False,
        )
    elif is_illustrative(manifest):
        console.print(
            "[bold red]These answers are illustrative[/] (hand-written), not model output.",
            highlight=False,
        )


def _status(show: bool, text: str) -> AbstractContextManager[object]:
    """A spinner with `text` while a slow step runs (nothing with --no-progress)."""
    from contextlib import nullcontext

    return console.status(markup(text)) if show else nullcontext()


def _images_root(config: Path, dataset: Dataset, run_dir: Path) -> str | None:
    """Where the report finds the images: the dataset's root, for the manifest.

    A root the config gave as a relative path is recorded relative to the run directory
    (the report resolves it from there), so a project folder can move as a whole; an
    absolute one is recorded as is. None for datasets without a local root.
    """
    import os

    from medbatch.files import read_toml

    root = getattr(dataset, "root", None)
    if not isinstance(root, Path):
        return None
    given = read_toml(config, "config file").get("dataset", {}).get("root")
    if isinstance(given, str) and not Path(given).expanduser().is_absolute():
        return Path(os.path.relpath(root.resolve(), run_dir.resolve())).as_posix()
    return str(root.resolve())
