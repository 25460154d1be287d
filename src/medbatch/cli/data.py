"""Data commands: validate a run before paying for it, generate synthetic ECGs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from medbatch.cli.app import app, console, flag, handle_errors
from medbatch.errors import ConfigError
from medbatch.terminal import markup

__all__: list[str] = []


@app.command("validate")
@handle_errors
def validate_command(
    config: Path = typer.Argument(..., help="Run configuration (TOML).", metavar="CONFIG"),
    decode: bool = typer.Option(
        True, "--decode/--headers-only", help="Decode every image (catches truncated files)."
    ),
    near_duplicates: bool = flag(
        False, "--near-duplicates", help="Also look for re-encoded or resized copies."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N records."),
    per_class: int | None = typer.Option(
        None, "--per-class", min=1, help="N records per label, stratified (overrides config)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the sample (overrides config)."),
    keep_duplicates: bool = flag(
        False, "--keep-duplicates", help="Keep copies of the same image when sampling."
    ),
) -> None:
    """Pre-flight a run: counts per class, bad files, duplicates, token estimate, job plan.

    Checks the records `medbatch run` would run with the same options (limit, sample).
    Nothing is uploaded or run. Exits with code 1 when a record would fail or there is
    no record at all.

    Example: medbatch validate examples/skin_lesion_config.toml
    """
    from medbatch.cli.commands import run_dataset
    from medbatch.config import load_config
    from medbatch.datasets.validation import validate_dataset
    from medbatch.pipeline.plan import plan_run

    run_config = load_config(config)
    task = run_config.build_task()
    # Every setting is checked before the (slow) image pass, so a typo in [runner] is
    # reported at once rather than after a table of results.
    runner = run_config.build_runner()
    dataset, _ = run_dataset(
        run_config,
        task,
        per_class=per_class,
        seed=seed,
        keep_duplicates=keep_duplicates,
        limit=limit or run_config.limit,
    )
    report = validate_dataset(
        dataset, labels=task.labels, decode=decode, near_duplicates=near_duplicates
    )
    console.print(report.to_table())
    estimate = plan_run(
        task,
        runner,
        report.total,
        constrained=run_config.constrained,
        params=run_config.params,
    )
    plan = Table(title="Run plan (estimates)", header_style="bold")
    plan.add_column("item")
    plan.add_column("value", justify="right")
    for key, value in estimate.rows():
        plan.add_row(markup(key), markup(value))
    console.print(plan)
    console.print(report.summary())
    if not report.ok:
        raise typer.Exit(code=1)


@app.command("synth-ecg")
@handle_errors
def synth_ecg_command(
    out_dir: Path = typer.Argument(
        ..., help="Folder to write the synthetic dataset into.", metavar="OUT_DIR"
    ),
    n: int = typer.Option(
        40, "-n", min=4, help="Number of pages (at least 4: split evenly over the 4 classes)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same pages."),
    width: int = typer.Option(2213, "--width", help="Page width in pixels (Kaggle: 2213)."),
    height: int = typer.Option(1572, "--height", help="Page height in pixels (Kaggle: 1572)."),
    layout: str = typer.Option("kaggle", "--layout", help="'kaggle' folder layout or 'flat'."),
    overwrite: bool = flag(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write synthetic 12-lead paper ECGs in the Kaggle folder layout (not clinical data).

    Example: medbatch synth-ecg data/synthetic-ecg -n 40 --seed 1
    """
    from typing import Literal, cast

    from medbatch.datasets.synthetic import write_synthetic_ecg_dataset

    if layout not in ("kaggle", "flat"):
        raise typer.BadParameter("layout must be 'kaggle' or 'flat'", param_hint="--layout")
    if not overwrite and out_dir.exists() and any(out_dir.iterdir()):
        raise ConfigError(
            f"{out_dir} is not empty; pass --overwrite to replace it, or choose a new folder"
        )
    root = write_synthetic_ecg_dataset(
        out_dir,
        n,
        seed=seed,
        layout=cast(Literal["kaggle", "flat"], layout),
        size=(width, height),
        overwrite=overwrite,
    )
    uneven = (
        "" if n % 4 == 0 else f"; {n} does not split evenly: classes get {n // 4} or {n // 4 + 1}"
    )
    console.print(
        f"Wrote {n} synthetic ECG pages to [bold]{markup(root)}[/] (not clinical data){uneven}.",
        soft_wrap=True,
    )
