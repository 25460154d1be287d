"""`medbatch demo`: the whole product offline, in one command."""

from __future__ import annotations

from pathlib import Path

import typer

from medbatch.cli.app import app, console, handle_errors
from medbatch.cli.display import metrics_table

__all__: list[str] = []


@app.command("demo")
@handle_errors
def demo_command(
    output_dir: Path = typer.Option(
        Path("medbatch-demo"), "--output-dir", "-o", help="Where to write the demo run."
    ),
) -> None:
    """Run the offline demo: the bundled recorded ECG answers, parsed and evaluated.

    Example: medbatch demo -o /tmp/demo
    """
    from medbatch.datasets.sample import load_ecg_sample
    from medbatch.pipeline import classify
    from medbatch.tasks.registry import get_task

    dataset, runner = load_ecg_sample()
    result = classify(
        dataset, get_task("ecg"), runner, store=output_dir, resume=False, progress=False
    )
    console.print(metrics_table(result.metrics, title="ECG demo (recorded sample answers)"))
    console.print(f"Predictions: [bold]{output_dir / 'predictions.parquet'}[/]")
