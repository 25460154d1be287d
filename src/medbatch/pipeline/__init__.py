"""`classify()`: the one loop that wires dataset → prompt → runner → parser → store.

Records stream through: requests are built lazily, the runner answers batch by batch, and
each prediction is written to the run store as it arrives. Nothing holds all images in
memory, and a run interrupted at any point resumes without losing or duplicating a record.

The package holds `run` (`classify` and its checks before a run), `loop` (the streaming
loop: requests, image probe, prediction rows), `canary_step` and `reprompt_step` (the
canary subset and the follow-up turn, over the loop), `result` (`RunResult`),
`support` (SIGTERM, progress bar, manifest comparison) and `plan` (`plan_run`: the
size and token estimate of a run, before it starts). It sits above every other layer
of the library (datasets, tasks, runners, store, evaluation) and must not import
`medbatch.cli`.
"""

from __future__ import annotations

from medbatch.pipeline.result import RunResult
from medbatch.pipeline.run import GuardrailOptions, classify
from medbatch.pipeline.support import RunTerminated

__all__ = ["GuardrailOptions", "RunResult", "RunTerminated", "classify"]
