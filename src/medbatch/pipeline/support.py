"""Small pieces of a run: SIGTERM as an interrupt, the progress bar, manifest comparison."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from medbatch.datasets.base import Dataset, SubsetDataset
from medbatch.images import check_pixels
from medbatch.records import Record
from medbatch.store import RunManifest

__all__ = ["RunTerminated"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunTerminated(KeyboardInterrupt):
    """SIGTERM arrived during `classify` (a scheduler, `docker stop`, `kill`).

    Handled like Ctrl-C: the answers that arrived are written, the manifest says
    `interrupted`, and the same call with `resume=True` goes on where it stopped. A
    `KeyboardInterrupt`, so `except Exception` blocks do not swallow it.
    """


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise `RunTerminated` on the first SIGTERM while a run is in progress.

    Only where SIGTERM would otherwise kill the process outright (its handler is the
    default) and only on the main thread (the only one Python delivers signals to); the
    previous handler is put back afterwards. A second SIGTERM during the clean-up is
    ignored, so the manifest write it is waiting for can finish.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):
        previous = None
    if previous is not signal.SIG_DFL:
        yield  # the host handles SIGTERM its own way (or ignores it)
        return
    fired = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise RunTerminated(f"terminated by signal {signum} (SIGTERM)")

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_before_sending(record: Record) -> None:
    """The pixel limit, checked once here for every runner (and again where images decode).

    A runner that sends files unchanged (a stage upload, a data URL) would otherwise let a
    decompression bomb through that `medbatch validate` and the decoding runners refuse.
    """
    check_pixels(record.image)


_COMPARED = (
    ("task", "task"),
    ("model_id", "model"),
    ("prompt_fingerprint", "prompt"),
    ("params_fingerprint", "generation params"),
    ("constrained", "constrained decoding"),
)


def _config_differences(previous: RunManifest, current: RunManifest) -> list[str]:
    """What makes `current` another run than the one stored (empty when it is the same)."""
    differences = []
    for attribute, name in _COMPARED:
        old, new = getattr(previous, attribute), getattr(current, attribute)
        if old == new:
            continue
        if attribute == "prompt_fingerprint":
            old = f"{previous.prompt_version} {old}"
            new = f"{current.prompt_version} {new}"
        elif attribute == "params_fingerprint":
            changed = sorted(
                key
                for key in set(previous.params) | set(current.params)
                if previous.params.get(key) != current.params.get(key)
            )
            if changed:
                differences.append(
                    "generation params "
                    + ", ".join(
                        f"{key} {previous.params.get(key)!r} → {current.params.get(key)!r}"
                        for key in changed
                    )
                )
                continue
        differences.append(f"{name} {old!r} → {new!r}")
    old_source = previous.dataset.get("source")
    new_source = current.dataset.get("source")
    # Only a different folder is another dataset: a limit, a sample or added images of the
    # same folder are the same run, extended or resumed on a part.
    if old_source and new_source and old_source != new_source:
        differences.append(f"dataset {old_source!r} → {new_source!r}")
    return differences


def _config_summary(manifest: RunManifest) -> dict[str, Any]:
    return {
        "task": manifest.task,
        "model_id": manifest.model_id,
        "prompt_version": manifest.prompt_version,
        "prompt_fingerprint": manifest.prompt_fingerprint,
        "params_fingerprint": manifest.params_fingerprint,
        "constrained": manifest.constrained,
        "dataset": manifest.dataset,
        "started_at": manifest.started_at,
        "status": manifest.status,
    }


def _dataset_source(dataset: Dataset) -> str | None:
    """The folder (or file) a dataset reads, when it has one: what makes it "the same"."""
    while isinstance(dataset, SubsetDataset):
        dataset = dataset.base
    for attribute in ("root", "path", "source"):
        value = getattr(dataset, attribute, None)
        if isinstance(value, (str, Path)) and str(value):
            return str(Path(value).expanduser().resolve())
    return None


def _escape(text: str) -> str:
    from medbatch.terminal import markup

    return markup(text)


def _safe_len(dataset: Dataset) -> int | None:
    try:
        return len(dataset)
    except (TypeError, NotImplementedError):
        return None


class _progress_bar:  # noqa: N801 - used like a function in a with statement
    """A rich progress bar, or a no-op, yielding an `advance()` callable."""

    def __init__(self, show: bool, total: int | None, description: str) -> None:
        self.show = show
        self.total = total
        self.description = description
        self._progress: Any = None
        self._task_id: Any = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self._progress.start()
        self._task_id = self._progress.add_task(_escape(self.description), total=self.total)
        progress = self._progress
        task_id = self._task_id
        return lambda: progress.advance(task_id)

    def describe(self, text: str) -> None:
        """Say what is happening now (starting the runner, ...) in place of the task name."""
        if self._progress is not None:
            self._progress.update(self._task_id, description=_escape(text))

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()
