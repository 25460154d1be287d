"""Core commands: tasks, run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from medbatch.cli.app import app, console, handle_errors
from medbatch.cli.display import metrics_table

__all__: list[str] = []


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
        table.add_row(name, ", ".join(task.labels.names), prompts, task.description)
    console.print(table)


@app.command("run")
@handle_errors
def run_command(
    config: Path = typer.Argument(..., help="Run configuration (TOML)."),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Reuse answers already in the run directory."
    ),
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="With --resume, run failed records again."
    ),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N records."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Run a classification described by a TOML config.

    Example: medbatch run examples/ecg_local.toml --resume
    """
    from medbatch.config import load_config
    from medbatch.pipeline import classify

    run_config = load_config(config)
    task = run_config.build_task()
    dataset = run_config.build_dataset(task)
    runner = run_config.build_runner()
    result = classify(
        dataset,
        task,
        runner,
        store=run_config.output_dir,
        resume=resume,
        retry_failed=retry_failed,
        limit=limit or run_config.limit,
        params=run_config.params,
        constrained=run_config.constrained,
        progress=progress,
        manifest_extra={"sampling": {"per_class": run_config.per_class, "seed": run_config.seed}},
    )
    console.print(metrics_table(result.metrics, title=f"{task.name} · {runner.model_id}"))
    console.print(f"Results in [bold]{result.run_dir}[/] ({result.skipped} reused from before)")
