"""Following a submitted `run_batch` job: wait for its end, cancel it, fail its records.

```
PENDING ─▶ ... ─▶ DONE | FAILED | CANCELLED | INTERNAL_ERROR | DELETED   (TERMINAL_STATUSES)
           └ timeout_s passed ─▶ cancel ─▶ "TIMEOUT"
           └ Ctrl-C ─▶ cancel (or leave it running with detach_on_interrupt) ─▶ re-raised
```

It must not import the runner (`medbatch.runners.snowflake` imports it) or a Snowflake SDK
at module level; the job object is anything with `status`, `cancel()` and `get_logs()`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from medbatch.records import InferenceResponse
from medbatch.snowflake import SnowflakeJobError

__all__ = [
    "ALREADY_EXISTS_CODE",
    "NOT_FOUND_CODE",
    "TERMINAL_STATUSES",
    "cancel_job",
    "fail_all",
    "wait_for_job",
]

logger = logging.getLogger("medbatch.runners.snowflake")

TERMINAL_STATUSES = frozenset({"DONE", "FAILED", "CANCELLED", "INTERNAL_ERROR", "DELETED"})
NOT_FOUND_CODE = 2003
"""`sql_error_code` of `SnowparkSQLException` when an object does not exist (what the
real `snowflake.ml.jobs.get_job` raises for an unknown job)."""
ALREADY_EXISTS_CODE = 2002
"""`sql_error_code` of `SnowparkSQLException` when an object of that name already exists."""


def wait_for_job(
    job: Any,
    entry: dict[str, Any],
    n_records: int,
    *,
    poll_interval_s: float,
    timeout_s: float | None,
    detach_on_interrupt: bool,
    progress: bool,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    on_change: Callable[[], None],
) -> str:
    """Poll `job` until it ends; its final status, or `TIMEOUT`.

    `entry["status"]` follows the job, and `on_change` is called each time it changes (the
    runner persists its state there).

    Raises:
        SnowflakeJobError: The status cannot be read any more (the job keeps running).
        KeyboardInterrupt: Re-raised after cancelling (or detaching from) the job.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    started = clock()
    name = entry["job_name"]
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
        disable=not progress,
    )
    try:
        with bar:
            task = bar.add_task(f"Snowflake job {name}: submitted", total=None)
            while True:
                try:
                    status = str(job.status)
                except Exception as exc:
                    raise SnowflakeJobError(
                        f"lost track of Snowflake job {name} ({type(exc).__name__}: {exc}); "
                        "it keeps running: resume the run to re-attach to it"
                    ) from exc
                bar.update(
                    task, description=f"Snowflake job {name}: {status} ({n_records} records)"
                )
                if status != entry.get("status"):
                    logger.info("Snowflake job %s: %s", name, status)
                    entry["status"] = status
                    on_change()
                if status in TERMINAL_STATUSES:
                    return status
                if timeout_s is not None and clock() - started > timeout_s:
                    cancel_job(job, name, f"timeout after {timeout_s:.0f}s")
                    entry["status"] = "TIMEOUT"
                    on_change()
                    return "TIMEOUT"
                sleep(poll_interval_s)
    except KeyboardInterrupt:
        if detach_on_interrupt:
            logger.warning("left Snowflake job %s running; resume to re-attach", name)
        else:
            cancel_job(job, name, "interrupted")
            entry["status"] = "CANCELLED"
            on_change()
        raise


def cancel_job(job: Any, name: str, why: str) -> None:
    """Cancel `job`, logging (not raising) when that fails."""
    logger.warning("cancelling Snowflake job %s (%s)", name, why)
    try:
        job.cancel()
    except Exception as exc:
        logger.error("could not cancel Snowflake job %s: %s; cancel it by hand", name, exc)


def fail_all(
    job: Any, entry: dict[str, Any], ids: Sequence[str], status: str, *, log_tail_lines: int
) -> Iterator[InferenceResponse]:
    """One error per record of a job that did not end `DONE`, with the log tail."""
    name = entry["job_name"]
    try:
        logs = str(job.get_logs(limit=log_tail_lines))
    except Exception as exc:
        logs = f"(logs unavailable: {type(exc).__name__}: {exc})"
    tail = "\n".join(logs.splitlines()[-log_tail_lines:])
    logger.error("Snowflake job %s ended %s; last log lines:\n%s", name, status, tail)
    message = f"Snowflake job {name} ended {status}. Last log lines:\n{tail[-4000:]}"
    kind = "timeout" if status == "TIMEOUT" else "job_failed"
    for record_id in ids:
        yield InferenceResponse.failure(record_id, kind, message, metadata={"snowflake_job": name})
