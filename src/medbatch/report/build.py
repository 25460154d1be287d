"""`write_report`: evaluate a run directory, draw its plots and render the page.

The page is rendered from `templates/report.html.j2` with Jinja2's autoescape on, so a
value can only reach the HTML escaped; the template includes `templates/report.css`
inline. Must not import private names of `medbatch.evaluation`.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from medbatch.evaluation import Evaluation, evaluate
from medbatch.report.figures import build_figures
from medbatch.report.formatting import num, pct, span
from medbatch.report.page import page_context
from medbatch.store import RunStore, atomic_write_bytes, atomic_write_text, load_predictions

__all__ = ["render_page", "write_report"]

_TEMPLATE = "report.html.j2"


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("medbatch.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        finalize=_escape,
    )
    environment.filters.update(num=num, pct=pct, span=span)
    return environment


def _escape(value: Any) -> Any:
    """Escape a value as `html.escape` does (`&quot;`, `&#x27;`), markup left as it is.

    Autoescape would escape it too, spelling quotes `&#34;`; escaping here keeps the page
    byte for byte what `html.escape` gives, which readers and tests of the report know.
    """
    if hasattr(value, "__html__"):
        return value
    # Escaped just above, so it is safe markup now.
    return markupsafe.Markup(html.escape(str(value), quote=True))  # noqa: S704


def render_page(**context: object) -> str:
    """The report page for `medbatch.report.page.page_context`'s variables."""
    return _environment().get_template(_TEMPLATE).render(context)


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    images_root: str | Path | None = None,
    evaluation: Evaluation | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    dedupe: bool = False,
    negative_label: str | None = None,
    examples_per_cell: int = 3,
) -> Path:
    """Write `report.html`, `metrics.json` and the plots (PNG) for a run directory.

    Args:
        run_dir: The run directory (`manifest.json` + predictions).
        out: The HTML file to write; default `run_dir/report.html`. `metrics.json` and
            `figures/` are written next to it.
        images_root: Folder the record ids are relative to (e.g. an `ImageFolderDataset`
            root), for the images in the gallery; default: the manifest's `images_root`
            (a relative one is relative to `run_dir`).
        evaluation: A precomputed evaluation; computed here when None.
        n_bootstrap: Bootstrap resamples for the intervals (when computing).
        seed: Seed of the resampling.
        dedupe: Count each image content once (when computing).
        negative_label: The screening view's negative label (default: the one the run's
            manifest records).
        examples_per_cell: Example records shown per confusion-matrix cell.

    Returns:
        The path of the HTML report.

    Raises:
        RunStoreError: `run_dir` holds no predictions.
    """
    run_dir = Path(run_dir)
    frame = load_predictions(run_dir)
    manifest = RunStore(run_dir).read_manifest()
    if evaluation is None:
        # The table is read once: the evaluation gets it with its manifest.
        evaluation = evaluate(
            frame,
            negative_label=negative_label,
            n_bootstrap=n_bootstrap,
            seed=seed,
            dedupe=dedupe,
            manifest=manifest,
        )
    target = Path(out) if out is not None else run_dir / "report.html"
    target.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a reader (or a kill) never sees half a file.
    atomic_write_text(target.parent / "metrics.json", evaluation.to_json() + "\n")

    root = images_root
    if root is None and manifest is not None:
        recorded = manifest.images_root
        # `medbatch run` records a root given as a relative path relative to the run dir.
        root = run_dir / recorded if isinstance(recorded, str) and recorded else None
    figures = build_figures(evaluation)
    figure_dir = target.parent / "figures"
    figure_dir.mkdir(exist_ok=True)
    for figure in figures.values():
        atomic_write_bytes(figure_dir / figure.filename, figure.png)

    context = page_context(
        evaluation=evaluation,
        frame=frame,
        manifest=manifest,
        figures=figures,
        images_root=Path(root) if root else None,
        examples_per_cell=examples_per_cell,
        run_name=run_dir.resolve().name,
    )
    atomic_write_text(target, render_page(**context))
    return target
