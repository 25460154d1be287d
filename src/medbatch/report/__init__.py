"""A self-contained HTML report of one run: what ran, how well, and how sure we are.

```
run_dir/
├── manifest.json, predictions.parquet     (written by the run)
├── report.html          ONE file: inline CSS, plots as inline PNG, no scripts, no network
├── metrics.json         the `Evaluation` (`medbatch evaluate --json` prints the same)
└── figures/             the plots as PNG files (confusion_matrix.png, per_class.png, ...)
```

The page is a Jinja2 template rendered with autoescape, so every value shown is escaped;
runner settings whose names look like secrets are redacted; record metadata is never
dumped (it may hold identifiers), only the image path used for a thumbnail.

The package, one module per job:

| module | holds |
| --- | --- |
| `build` | `write_report`: evaluate, draw, render, write atomically |
| `page` | the page builder: the template's variables, as plain values (no HTML) |
| `figures` | the matplotlib plots, from an `Evaluation` alone |
| `formatting` | numbers, intervals, facts, redaction as text; `headline_rows` |
| `run_kind` | `is_random_model`, `is_illustrative` (the page's warning banners) |
| `templates/` | `report.html.j2` and `report.css` (package data) |

It reads only public names of `medbatch.evaluation` (the `Evaluation` holds the ROC points
and calibration bins the plots need) and must not import the pipeline or any runner.

Example:
    ```python
    from medbatch.report import write_report
    path = write_report("runs/ecg")        # runs/ecg/report.html
    ```
"""

from __future__ import annotations

from medbatch.report.build import write_report
from medbatch.report.formatting import METRIC_NAMES, headline_rows
from medbatch.report.run_kind import RANDOM_MODEL_MARKER, is_illustrative, is_random_model

__all__ = [
    "METRIC_NAMES",
    "RANDOM_MODEL_MARKER",
    "headline_rows",
    "is_illustrative",
    "is_random_model",
    "write_report",
]
