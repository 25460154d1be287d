"""`KaggleDataset`: a Kaggle dataset downloaded with kagglehub, labelled by a task's folder map.

The default is the ECG image set the project started from, `evilspirit05/ecg-analysis`:

```
<download root>/
└── ecg_data_new_version/
    └── ecg data new version/
        ├── normal_ecg_images/                 Normal(1).jpg …   → NORMAL
        ├── abnormal_heartbeat_ecg_images/     HB(1).jpg …       → ABNORMAL_HEARTBEAT
        ├── myocardial_infarction_ecg_images/  MI(1).jpg …       → MYOCARDIAL_INFARCTION
        └── post_mi_history_ecg_images/        PMI(1).jpg …      → POST_MI
```

928 JPEGs of 2213×1572 px (284 normal, 233 abnormal heartbeat, 239 MI, 172 post-MI), but only
about 491 distinct images: many files are byte-identical copies (see
`medbatch.datasets.duplicates`). The set mirrors Khan, A. H. & Hussain, M., "ECG Images
dataset of Cardiac Patients", Mendeley Data, licensed CC BY 4.0: cite it when you publish
results on it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from medbatch.datasets.base import Dataset
from medbatch.datasets.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from medbatch.errors import DatasetError, MissingDependencyError
from medbatch.records import Record

if TYPE_CHECKING:
    from medbatch.tasks.base import Task

__all__ = ["ECG_KAGGLE_HANDLE", "KaggleDataset", "kaggle_credentials_source"]

ECG_KAGGLE_HANDLE = "evilspirit05/ecg-analysis"
"""The Kaggle mirror of Khan & Hussain's ECG image set (Mendeley Data, CC BY 4.0)."""

_CREDENTIALS_HELP = (
    "Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY in the environment, or save the "
    "token from kaggle.com/settings → API → Create New Token as ~/.kaggle/kaggle.json "
    "(chmod 600). Never put the key in code or a config file."
)


def kaggle_credentials_source() -> str | None:
    """Where kagglehub will find credentials, without reading or revealing them.

    Returns:
        A description such as `"environment (KAGGLE_USERNAME/KAGGLE_KEY)"` or
        `"~/.kaggle/kaggle.json"`, or None when there are none.
    """
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment (KAGGLE_USERNAME/KAGGLE_KEY)"
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "environment (KAGGLE_API_TOKEN)"
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")).expanduser()
    for name in ("kaggle.json", "access_token"):
        if (config_dir / name).is_file():
            return str(config_dir / name)
    return None


def _missing_credentials_hint() -> str:
    if os.environ.get("KAGGLE_KEY") and not os.environ.get("KAGGLE_USERNAME"):
        # The seed notebook set only KAGGLE_KEY; kagglehub needs both.
        return "KAGGLE_KEY is set but KAGGLE_USERNAME is not; set both. " + _CREDENTIALS_HELP
    return "No Kaggle credentials found. " + _CREDENTIALS_HELP


class KaggleDataset(Dataset):
    """Images of a Kaggle dataset, labelled through a task's `folder_map`.

    The download happens on first use (iterating, `len`, `root`), not in the constructor,
    and kagglehub caches it, so building the object is free and repeated runs do not
    download again. Pass `path` to read an already downloaded copy without kagglehub.

    Args:
        handle: `owner/dataset` on Kaggle.
        task: The task (or its registered name) whose `folder_map` turns class folders into
            labels and whose `labels` the records are validated against.
        path: A local copy laid out as Kaggle serves it; skips the download.
        subdir: Read only this folder inside the download (e.g.
            `ecg_data_new_version/ecg data new version`).
        extensions: File suffixes that count as images.
        force_download: Ask kagglehub to download again even if cached.

    Example:
        ```python
        ds = KaggleDataset()                       # evilspirit05/ecg-analysis, task "ecg"
        ds.class_counts()                          # downloads on first use
        # {'ABNORMAL_HEARTBEAT': 233, 'MYOCARDIAL_INFARCTION': 239, 'NORMAL': 284, 'POST_MI': 172}
        ```

    Record ids are paths relative to the download root, e.g.
    `ecg_data_new_version/ecg data new version/normal_ecg_images/Normal(12).jpg`.
    """

    def __init__(
        self,
        handle: str = ECG_KAGGLE_HANDLE,
        task: str | Task = "ecg",
        path: str | Path | None = None,
        *,
        subdir: str | Path | None = None,
        extensions: Collection[str] = IMAGE_EXTENSIONS,
        force_download: bool = False,
    ) -> None:
        if isinstance(task, str):
            from medbatch.tasks import get_task

            task = get_task(task)
        if not task.folder_map:
            raise DatasetError(
                f"task {task.name!r} has no folder_map, so Kaggle class folders cannot be "
                "turned into labels; give the task a folder_map or use ImageFolderDataset "
                "with label_map="
            )
        self.handle = handle
        self.task = task
        self.labels = task.labels
        self.subdir = Path(subdir) if subdir is not None else None
        self.extensions = extensions
        self.force_download = force_download
        self._path = Path(path).expanduser() if path is not None else None
        self._folder: ImageFolderDataset | None = None

    def download(self) -> Path:
        """Download (or find in kagglehub's cache) and return the dataset root.

        Raises:
            MissingDependencyError: kagglehub is not installed.
            DatasetError: The download failed; the message says why (credentials, handle).
        """
        try:
            import kagglehub
        except ImportError as exc:
            raise MissingDependencyError("KaggleDataset", "kagglehub", "kaggle") from exc
        try:
            downloaded = kagglehub.dataset_download(self.handle, force_download=self.force_download)
        except Exception as exc:
            # kagglehub raises its own and requests' errors; translate them at this seam.
            # The message names the handle and the kind of failure, never a credential.
            name = type(exc).__name__
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if name in ("UnauthenticatedError", "CredentialError") or status in (401, 403):
                hint = (
                    _missing_credentials_hint()
                    if kaggle_credentials_source() is None
                    else "Kaggle refused the credentials found in "
                    f"{kaggle_credentials_source()}; check they are current. " + _CREDENTIALS_HELP
                )
                raise DatasetError(
                    f"Cannot download Kaggle dataset {self.handle!r}: {hint}"
                ) from exc
            if name == "NotFoundError" or status == 404:
                raise DatasetError(
                    f"Kaggle dataset {self.handle!r} was not found: check the handle "
                    "(owner/dataset, as in the dataset's URL)"
                ) from exc
            raise DatasetError(
                f"Cannot download Kaggle dataset {self.handle!r} ({name}): {exc}"
            ) from exc
        return Path(downloaded)

    @property
    def root(self) -> Path:
        """The local dataset root (downloads on first access unless `path` was given)."""
        if self._path is None:
            self._path = self.download()
        return self._path

    def _images(self) -> ImageFolderDataset:
        if self._folder is None:
            root = self.root / self.subdir if self.subdir is not None else self.root
            if not root.is_dir():
                raise DatasetError(f"Couldn't find {root}: check `path` and `subdir`")
            self._folder = ImageFolderDataset(
                root,
                label_map=self.task.folder_map,
                labels=self.task.labels,
                extensions=self.extensions,
                recursive=True,
            )
            if not any(True for _ in self._folder):
                folders = ", ".join(sorted(self.task.folder_map))
                raise DatasetError(
                    f"Couldn't find any class folder of task {self.task.name!r} ({folders}) "
                    f"with images under {root}"
                )
        return self._folder

    def __iter__(self) -> Iterator[Record]:
        for record in self._images():
            yield record.model_copy(
                update={"metadata": {**record.metadata, "source": f"kaggle:{self.handle}"}}
            )

    def __len__(self) -> int:
        return len(self._images())

    def class_counts(self) -> dict[str | None, int]:
        """Images per label (copies included: see `medbatch.datasets.duplicates`)."""
        return self._images().class_counts()
