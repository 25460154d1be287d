"""`RunResult`: what `classify` returns, with the next steps (evaluate, report) on it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medbatch.store import RunManifest

if TYPE_CHECKING:
    from collections.abc import Sequence

    from medbatch.evaluation import Evaluation

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """What `classify` returns.

    Attributes:
        predictions: One row per record of the dataset, in dataset order (see
            `medbatch.records.Prediction` for the columns).
        metrics: Headline figures (accuracy, coverage, counts per status).
        manifest: What ran.
        run_dir: Where results are stored, when a store was used.
        skipped: Records answered by an earlier call and reused (resume), each counted once
            (canary records answered in this call are not "reused").
        constraint_ignored: Answers where the back-end ignored the label constraint.
    """

    predictions: pd.DataFrame
    metrics: dict[str, Any]
    manifest: RunManifest
    run_dir: Path | None = None
    skipped: int = 0
    constraint_ignored: int = field(default=0)

    def evaluate(
        self,
        labels: Sequence[str] | None = None,
        negative_label: str | None = None,
        *,
        n_bootstrap: int = 1000,
        seed: int = 0,
        dedupe: bool = False,
    ) -> Evaluation:
        """Evaluate this call's predictions (`medbatch.evaluation.evaluate` on them).

        Args:
            labels: The label order; inferred from the predictions when None.
            negative_label: The "normal" class for sensitivity and specificity.
            n_bootstrap: Bootstrap resamples for the confidence intervals.
            seed: Seed for the bootstrap.
            dedupe: Count byte-identical images once.

        Returns:
            The `Evaluation` (confusion matrix, per-class and headline metrics with CIs).
        """
        from medbatch.evaluation import evaluate

        return evaluate(
            self.predictions,
            labels,
            negative_label,
            n_bootstrap,
            seed,
            dedupe=dedupe,
        )

    def report(self, out: str | Path | None = None, **options: Any) -> Path:
        """Write the HTML report of the run directory (`medbatch.report.write_report`).

        Args:
            out: Where to write it; default `report.html` in the run directory.
            **options: Passed on to `write_report` (`images_root`, `n_bootstrap`, ...).

        Returns:
            The path of `report.html`.

        Raises:
            ValueError: The run kept its results in memory only (no `store`).
        """
        if self.run_dir is None:
            raise ValueError(
                "this run has no run directory to report on: call classify(..., store=DIR)"
            )
        from medbatch.report import write_report

        return write_report(self.run_dir, out, **options)
