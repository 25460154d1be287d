"""`medbatch evaluate`, `medbatch report`, `medbatch compare`: read a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from medbatch.cli.app import app, console, flag, handle_errors, print_json
from medbatch.errors import ConfigError
from medbatch.terminal import markup

if TYPE_CHECKING:
    from medbatch.evaluation import Comparison, Evaluation

__all__ = ["comparison_table", "evaluation_table", "status_line"]


def evaluation_table(evaluation: Evaluation, title: str = "Evaluation") -> Table:
    """Headline metrics with their 95% confidence intervals and n, as a rich table."""
    from medbatch.report import headline_rows

    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    table.add_column("n", justify="right")
    for row in headline_rows(evaluation):
        table.add_row(*(markup(cell) for cell in row))
    return table


def status_line(evaluation: Evaluation) -> str:
    """One line of coverage: parsed out of all, then every other status with records."""
    others = ", ".join(
        f"{status} {count}"
        for status, count in evaluation.status_counts.items()
        if count and status != "parsed"
    )
    text = f"coverage: {evaluation.n_parsed}/{evaluation.n} answers parsed"
    text += f" (not parsed: {others})" if others else ""
    guard = evaluation.guardrails
    if guard.constrained and guard.constraint_validity is not None:
        text += (
            f"\nconstraint validity: {guard.constraint_validity:.1%} "
            f"({guard.constraint_ignored} answers ignored the constraint)"
        )
    if guard.image_not_seen:
        text += f"\nimages not seen by the model: {guard.image_not_seen}"
    if guard.canary:
        failures = guard.canary.get("failures") or []
        text += "\ncanary: " + ("failed: " + "; ".join(failures) if failures else "passed")
        text += f" ({guard.canary.get('n')} records)"
    return text


def comparison_table(comparison: Comparison, show: int = 20) -> Table:
    """The records two runs disagree on (the first `show`)."""
    table = Table(
        title=f"Disagreements ({len(comparison.disagreements)})",
        header_style="bold",
        title_justify="left",
    )
    for column in ("record", "truth", "run A", "run B"):
        table.add_column(column)
    for d in comparison.disagreements[:show]:
        mark_a = "✓" if d.correct_a else ("✗" if d.correct_a is False else "")
        mark_b = "✓" if d.correct_b else ("✗" if d.correct_b is False else "")
        table.add_row(
            markup(d.record_id),
            markup(d.truth or "–"),
            markup(f"{d.label_a or d.status_a} {mark_a}"),
            markup(f"{d.label_b or d.status_b} {mark_b}"),
        )
    return table


def _run_dir(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"{path} is not a run directory (expected a folder)")
    return path


@app.command("evaluate")
@handle_errors
def evaluate_command(
    run_dir: Path = typer.Argument(
        ..., help="A run directory (manifest + predictions).", metavar="RUN_DIR"
    ),
    *,
    as_json: bool = flag(False, "--json", help="Print the full evaluation as JSON."),
    negative_label: str | None = typer.Option(
        None, "--negative-label", help="Label that counts as negative (default: NORMAL if any)."
    ),
    dedupe: bool = flag(False, "--dedupe", help="Count each image content (sha256) once."),
    n_bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Bootstrap resamples for the 95% CIs (0: none)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Metrics of a run with 95% confidence intervals: accuracy, balanced accuracy, F1, kappa,
    coverage, per class, screening view, ROC AUC and calibration when scores exist.

    Example: medbatch evaluate runs/ecg --json > metrics.json
    """
    from medbatch.evaluation import evaluate

    try:
        evaluation = evaluate(
            _run_dir(run_dir),
            negative_label=negative_label,
            n_bootstrap=n_bootstrap,
            seed=seed,
            dedupe=dedupe,
        )
    except ValueError as exc:  # a --negative-label that is not a label
        raise ConfigError(str(exc)) from exc
    if as_json:
        print_json(evaluation.to_dict())
        return
    completeness = evaluation.completeness()
    if completeness is not None:
        console.print(f"[bold yellow]warning:[/] {markup(completeness)}", highlight=False)
    console.print(evaluation_table(evaluation, title=markup(f"Evaluation of {run_dir}")))
    console.print(status_line(evaluation), highlight=False)
    for note in evaluation.notes:
        console.print(f"[yellow]note:[/] {markup(note)}", highlight=False)


@app.command("report")
@handle_errors
def report_command(
    run_dir: Path = typer.Argument(
        ..., help="A run directory (manifest + predictions).", metavar="RUN_DIR"
    ),
    *,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="HTML file to write (default: RUN_DIR/report.html)."
    ),
    images_root: Path | None = typer.Option(
        None, "--images-root", help="Folder the record ids are relative to, for thumbnails."
    ),
    dedupe: bool = flag(False, "--dedupe", help="Count each image content once."),
    open_report: bool = flag(False, "--open", help="Open the report in a browser."),
) -> None:
    """Write a self-contained HTML report (plus metrics.json and PNG plots) for a run.

    Example: medbatch report runs/ecg --open
    """
    from medbatch.report import write_report

    path = write_report(_run_dir(run_dir), out, images_root=images_root, dedupe=dedupe)
    console.print(
        f"Report: [bold]{markup(str(path))}[/] (metrics.json and figures/ beside it)",
        soft_wrap=True,
    )
    if open_report:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())


def _run_label(name: str, run_dir: Path, model: str | None, prompt: str | None) -> str:
    """`A: runs/ecg-cot (model, prompt cot-v1)`: two runs of one model stay apart."""
    details = ", ".join(part for part in (model, f"prompt {prompt}" if prompt else None) if part)
    return f"{name}: {run_dir}" + (f" ({details})" if details else "") + " accuracy"


@app.command("compare")
@handle_errors
def compare_command(
    run_a: Path = typer.Argument(..., help="The baseline run directory.", metavar="RUN_A"),
    run_b: Path = typer.Argument(..., help="The run to compare with it.", metavar="RUN_B"),
    *,
    as_json: bool = flag(False, "--json", help="Print the comparison as JSON."),
    show: int = typer.Option(20, "--show", min=0, help="Disagreeing records to list."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Compare two runs on the records they share: paired accuracy difference (B - A) with a
    95% CI, McNemar's exact test, and the records where they disagree.

    Example: medbatch compare runs/ecg-cot runs/ecg-direct
    """
    from medbatch.evaluation import compare

    try:
        comparison = compare(_run_dir(run_a), _run_dir(run_b), seed=seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    if as_json:
        print_json(comparison.model_dump(mode="json"))
        return
    table = Table(title="Paired comparison", header_style="bold", title_justify="left")
    table.add_column("")
    table.add_column("value", justify="right")
    acc_a = comparison.accuracy_a
    acc_b = comparison.accuracy_b
    table.add_row(
        markup(_run_label("A", run_a, comparison.model_a, comparison.prompt_a)),
        "–" if acc_a is None else f"{acc_a:.3f}",
    )
    table.add_row(
        markup(_run_label("B", run_b, comparison.model_b, comparison.prompt_b)),
        "–" if acc_b is None else f"{acc_b:.3f}",
    )
    table.add_row("difference B - A (95% CI)", comparison.difference.format())
    table.add_row(
        "only A right / only B right", f"{comparison.a_only_correct} / {comparison.b_only_correct}"
    )
    p_value = comparison.mcnemar_p
    table.add_row("McNemar exact p", "–" if p_value is None else f"{p_value:.4g}")
    table.add_row(
        "paired records (with truth)", f"{comparison.n_paired} ({comparison.n_with_truth})"
    )
    if comparison.unpaired_a or comparison.unpaired_b:
        table.add_row(
            "records in one run only (not compared)",
            f"A {comparison.unpaired_a}, B {comparison.unpaired_b}",
        )
    console.print(table)
    if comparison.disagreements and show:
        console.print(comparison_table(comparison, show))
