"""`RunResult`: what `classify` returns, with the next steps (evaluate, report) on it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medbatch.store import RunManifest

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

    from medbatch.evaluation import Evaluation

__all__ = ["RunResult"]


class RunResult:
    """What `classify` returns.

    Attributes:
        predictions: One row per record of the dataset, in dataset order (see
            `medbatch.records.Prediction` for the columns). With a store, read from the run
            directory on first access rather than held while the run streams, so a long
            run's memory does not grow with its length.
        metrics: Headline figures (accuracy, coverage, counts per status).
        manifest: What ran.
        run_dir: Where results are stored, when a store was used.
        skipped: Records answered by an earlier call and reused (resume), each counted once
            (canary records answered in this call are not "reused").
        constraint_ignored: Answers where the back-end ignored the label constraint.
    """

    def __init__(
        self,
        predictions: pd.DataFrame | Callable[[], pd.DataFrame],
        metrics: dict[str, Any],
        manifest: RunManifest,
        run_dir: Path | None = None,
        skipped: int = 0,
        constraint_ignored: int = 0,
    ) -> None:
        """Keep the figures; `predictions` is the table or a function that loads it."""
        self._predictions: pd.DataFrame | None = None
        self._load: Callable[[], pd.DataFrame] | None = None
        if callable(predictions):
            self._load = predictions
        else:
            self._predictions = predictions
        self.metrics = metrics
        self.manifest = manifest
        self.run_dir = run_dir
        self.skipped = skipped
        self.constraint_ignored = constraint_ignored

    @property
    def predictions(self) -> pd.DataFrame:
        """One row per record of the dataset, in dataset order (loaded once, then kept)."""
        if self._predictions is None:
            assert self._load is not None  # one of the two is always set
            self._predictions = self._load()
            self._load = None
        return self._predictions

    @predictions.setter
    def predictions(self, frame: pd.DataFrame) -> None:
        self._predictions, self._load = frame, None

    def __repr__(self) -> str:
        return (
            f"RunResult(metrics={self.metrics!r}, run_dir={self.run_dir!r}, "
            f"skipped={self.skipped}, constraint_ignored={self.constraint_ignored})"
        )

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
