"""Pre-flight validation: make bad data visible before a GPU job is paid for.

```
validate_dataset(ds) ─▶ ValidationReport
  per record   missing · empty · not_an_image · truncated · decompression_bomb   (error)
               unknown_label · duplicate_id                                    (error)
               too_small · too_large                                           (warning)
               duplicate · label_conflict · missing_label                      (warning)
               CMYK / 16-bit / palette / alpha / EXIF-rotated → RGB             (info)
  per dataset  no records                                                      (error)
               records per label, distinct images, image sizes
```

Errors are exactly what a run fails on or refuses: the records that become a
`RecordError(kind="image_error")` in `classify` (a broken link included), and the datasets
`medbatch run` refuses (no records, labels outside the task). Warnings are records a run
answers but whose results may mislead (a 1×1 image has nothing to see; a 20000×200 strip is
shrunk to a sliver; copies count twice; conflicting copies cannot all be right). Info is
what loading silently fixes.

Example:
    >>> from medbatch import ImageRef, ListDataset, Record
    >>> report = validate_dataset(ListDataset([Record(id="a", image=ImageRef.from_bytes(b""))]))
    >>> report.summary()
    '1 records, 0 distinct images, 1 errors, 0 warnings'
    >>> report.ok, report.errors[0].kind
    (False, 'empty')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from medbatch.datasets.duplicates import find_duplicates
from medbatch.images import ImageInfo, inspect_image
from medbatch.labels import LabelSet
from medbatch.records import Record, RecordError

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "EMPTY_DATASET",
    "Severity",
    "ValidationIssue",
    "ValidationReport",
    "check_labels",
    "validate_dataset",
]

Severity = Literal["error", "warning", "info"]
EMPTY_DATASET = "(dataset)"
"""The `record_id` of a dataset-level issue (no records at all)."""
_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


class ValidationIssue(BaseModel):
    """One problem with one record.

    Attributes:
        record_id: The record.
        kind: Machine-readable reason (`truncated`, `duplicate`, `label_conflict`, …).
        severity: `error` (a run would fail on it), `warning` (results may mislead) or
            `info` (normalised on load).
        message: What is wrong and, where useful, what to do.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str
    kind: str
    severity: Severity
    message: str


class ValidationReport(BaseModel):
    """The result of `validate_dataset`.

    Attributes:
        total: Records looked at.
        distinct_images: Distinct contents (by SHA-256) among readable records.
        label_counts: Records per label (`None` key for unlabelled), copies included.
        distinct_label_counts: Distinct images per label.
        issues: Every problem found, errors first.
        not_checked: Records whose image is remote (URL or stage) and was not read.
        min_size: Smallest `(width, height)` seen, by area.
        max_size: Largest `(width, height)` seen, by area.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    total: int
    distinct_images: int
    label_counts: dict[str | None, int] = Field(default_factory=dict)
    distinct_label_counts: dict[str | None, int] = Field(default_factory=dict)
    issues: tuple[ValidationIssue, ...] = ()
    not_checked: int = 0
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None

    @property
    def errors(self) -> tuple[ValidationIssue, ...]:
        """Issues a run would fail on."""
        return tuple(issue for issue in self.issues if issue.severity == "error")

    @property
    def warnings(self) -> tuple[ValidationIssue, ...]:
        """Issues that may mislead the results."""
        return tuple(issue for issue in self.issues if issue.severity == "warning")

    @property
    def ok(self) -> bool:
        """True when no record would fail."""
        return not self.errors

    def kind_counts(self) -> dict[str, int]:
        """Issues per kind."""
        return dict(Counter(issue.kind for issue in self.issues))

    def record_errors(self, *, include_warnings: bool = True) -> list[RecordError]:
        """Errors (and warnings) as `RecordError`s, for `Dataset.validate()`."""
        wanted = {"error", "warning"} if include_warnings else {"error"}
        return [
            RecordError(
                record_id=issue.record_id,
                kind=issue.kind,
                message=issue.message,
                retryable=False,
            )
            for issue in self.issues
            if issue.severity in wanted
        ]

    def summary(self) -> str:
        """One line: counts of records, distinct images, errors and warnings."""
        return (
            f"{self.total} records, {self.distinct_images} distinct images, "
            f"{len(self.errors)} errors, {len(self.warnings)} warnings"
        )

    def to_table(self, *, max_rows: int = 50) -> Table:
        """A rich table for the CLI: counts per label, then issues (errors first).

        Args:
            max_rows: Most issue rows to show; the rest are summarised in one row.
        """
        from rich.table import Table

        from medbatch.terminal import markup

        table = Table(title=f"Pre-flight validation: {self.summary()}", show_lines=False)
        table.add_column("record / label", overflow="fold")
        table.add_column("severity")
        table.add_column("kind")
        table.add_column("detail", overflow="fold")
        styles = {"error": "bold red", "warning": "yellow", "info": "dim"}
        labels = sorted(self.label_counts, key=lambda name: (name is None, name or ""))
        for label in labels:
            distinct = self.distinct_label_counts.get(label, 0)
            table.add_row(
                markup(label or "(unlabelled)"),
                "",
                "count",
                f"{self.label_counts[label]} records, {distinct} distinct images",
            )
        if self.min_size and self.max_size:
            table.add_row(
                "(all)",
                "",
                "size",
                f"{self.min_size[0]}×{self.min_size[1]} to "
                f"{self.max_size[0]}×{self.max_size[1]} px",
            )
        if self.not_checked:
            table.add_row(
                "(remote)", "", "not_checked", f"{self.not_checked} remote images not read"
            )
        shown = self.issues[:max_rows]
        for issue in shown:
            severity = f"[{styles[issue.severity]}]{issue.severity}[/]"
            # Ids and messages hold file names: `[copy]` is text, not markup.
            table.add_row(markup(issue.record_id), severity, issue.kind, markup(issue.message))
        hidden = self.issues[max_rows:]
        if hidden:
            counts = Counter(issue.kind for issue in hidden)
            listed = ", ".join(f"{count} {kind}" for kind, count in counts.most_common())
            table.add_row("…", "", "more", f"{len(hidden)} more issues: {listed}")
        return table


def validate_dataset(
    records: Iterable[Record],
    *,
    labels: LabelSet | None = None,
    decode: bool = True,
    duplicates: bool = True,
    near_duplicates: bool = False,
    min_side: int = 32,
    max_side: int = 16_384,
) -> ValidationReport:
    """Check every record before a run.

    Never raises on bad data: every problem becomes an issue naming its record.

    Args:
        records: A dataset (its `labels` are used when `labels` is not given) or any
            iterable of records.
        labels: The allowed labels; records with another label are errors.
        decode: Decode every image (catches truncated files; JPEGs decode at reduced scale).
            Without it only headers are read.
        duplicates: Look for exact copies and label conflicts.
        near_duplicates: Also look for re-encoded/resized copies (decodes a thumbnail of each).
        min_side: Images with a side below this many pixels are warnings (nothing to see).
        max_side: Images with a side above this are warnings (shrunk to a sliver, or
            refused by some servers).

    Returns:
        The report.
    """
    if labels is None:
        labels = getattr(records, "labels", None)
    issues: list[ValidationIssue] = []
    seen_ids: set[str] = set()
    label_counts: Counter[str | None] = Counter()
    by_sha: dict[str, str | None] = {}
    distinct_per_label: dict[str | None, set[str]] = {}
    sizes: list[tuple[int, int]] = []
    checked: list[Record] = []
    total = not_checked = 0
    any_labelled = any_unlabelled = False

    def add(record: Record, kind: str, severity: Severity, message: str) -> None:
        issues.append(
            ValidationIssue(record_id=record.id, kind=kind, severity=severity, message=message)
        )

    for record in records:
        total += 1
        label_counts[record.label] += 1
        any_labelled |= record.label is not None
        any_unlabelled |= record.label is None
        if record.id in seen_ids:
            add(record, "duplicate_id", "error", "another record has the same id")
        seen_ids.add(record.id)
        if labels is not None and record.label is not None and record.label not in labels:
            add(
                record,
                "unknown_label",
                "error",
                f"label {record.label!r} is not one of {', '.join(labels.names)}",
            )
        if record.image.kind in ("url", "stage"):
            not_checked += 1
            continue
        info = inspect_image(record.image, decode=decode)
        if not info.ok:
            add(record, info.problem or "image_error", "error", _load_message(record, info))
            continue
        checked.append(record)
        if info.width is not None and info.height is not None:
            sizes.append((info.width, info.height))
            size_problem = _size_problem(info.width, info.height, min_side, max_side)
            if size_problem is not None:
                # A warning, not an error: the run answers such an image (back-ends shrink
                # large ones), and validate must not call an error what a run accepts.
                add(record, size_problem[0], "warning", size_problem[1])
        for note in info.normalised:
            add(record, "normalised", "info", f"{note} on load")
        sha = record.image.sha256  # a second read of a file just read: from the page cache
        by_sha.setdefault(sha, record.label)
        distinct_per_label.setdefault(record.label, set()).add(sha)

    if any_labelled and any_unlabelled:
        for record_id in _unlabelled_ids(checked):
            issues.append(
                ValidationIssue(
                    record_id=record_id,
                    kind="missing_label",
                    severity="warning",
                    message="no label while other records have one: it cannot be evaluated",
                )
            )
    if duplicates and checked:
        issues.extend(_duplicate_issues(checked, near=near_duplicates))
    issues.extend(_dataset_issues(total))

    issues.sort(key=lambda issue: _ORDER[issue.severity])
    return ValidationReport(
        total=total,
        distinct_images=len(by_sha),
        label_counts=dict(label_counts),
        distinct_label_counts={label: len(shas) for label, shas in distinct_per_label.items()},
        issues=tuple(issues),
        not_checked=not_checked,
        min_size=min(sizes, key=lambda s: s[0] * s[1]) if sizes else None,
        max_size=max(sizes, key=lambda s: s[0] * s[1]) if sizes else None,
    )


def _dataset_issues(total: int) -> list[ValidationIssue]:
    # `medbatch run` refuses a dataset without records, so validate must fail it too.
    if total:
        return []
    return [
        ValidationIssue(
            record_id=EMPTY_DATASET,
            kind="no_records",
            severity="error",
            message="the dataset has no records: check the path, the label map and the "
            "extensions (images sit in one sub-folder per class)",
        )
    ]


def _unlabelled_ids(records: Iterable[Record]) -> list[str]:
    return [record.id for record in records if record.label is None]


def _load_message(record: Record, info: ImageInfo) -> str:
    message = info.message or "unreadable"
    if record.metadata.get("load_error"):
        # The dataset already knows why (e.g. a DICOM it could not decode): say so.
        message = f"{message} ({record.metadata['load_error']})"
    return message


def _size_problem(width: int, height: int, min_side: int, max_side: int) -> tuple[str, str] | None:
    if min(width, height) < min_side:
        return "too_small", f"{width}×{height} px is below {min_side} px: nothing to classify"
    if max(width, height) > max_side:
        return "too_large", f"{width}×{height} px exceeds {max_side} px; shrink it first"
    return None


def _duplicate_issues(records: list[Record], *, near: bool) -> list[ValidationIssue]:
    return [
        ValidationIssue(
            record_id=error.record_id or "?",
            kind=error.kind,
            severity="warning",
            message=error.message,
        )
        for error in find_duplicates(records, near=near).record_errors()
    ]


def check_labels(dataset: Iterable[Record], labels: LabelSet, *, task: str, where: str) -> int:
    """Refuse a run that cannot mean anything: no records, or truths outside the labels.

    The cheap part of `validate_dataset`, for the start of a run: it reads record
    references only (no image is opened).

    Args:
        dataset: The records.
        labels: The task's labels.
        task: The task's name, for the message.
        where: What to name in the message (e.g. the config file).

    Returns:
        The number of records.

    Raises:
        DatasetError: Naming `where`, the count and the unknown labels.
    """
    from medbatch.errors import DatasetError

    records = 0
    unknown: Counter[str] = Counter()
    for record in dataset:
        records += 1
        if record.label is not None and record.label not in labels:
            unknown[record.label] += 1
    if records == 0:
        raise DatasetError(
            f"{where}: the dataset has no records; check [dataset] (root, label_map, "
            "extensions): images must sit in one sub-folder per class"
        )
    if unknown:
        listed = ", ".join(f"{label!r} ({n} records)" for label, n in unknown.most_common())
        raise DatasetError(
            f"{where}: labels not in task {task!r}: {listed}; the task's labels are "
            f"{', '.join(labels.names)}. Map the folders with [dataset] label_map"
        )
    return records
