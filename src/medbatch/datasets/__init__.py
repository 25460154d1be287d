"""Where records come from: folders, manifests, Kaggle, DICOM, Snowflake stages, synthetic ECGs.

Importing this package is light: pydicom, kagglehub and snowflake load only when a dataset
that needs them is used.
"""

from medbatch.datasets.base import Dataset, ListDataset, SubsetDataset
from medbatch.datasets.duplicates import DuplicateReport, dedupe, find_duplicates
from medbatch.datasets.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from medbatch.datasets.kaggle import KaggleDataset
from medbatch.datasets.manifest import ManifestDataset
from medbatch.datasets.synthetic import SyntheticECGDataset, write_synthetic_ecg_dataset
from medbatch.datasets.validation import ValidationReport, validate_dataset

__all__ = [
    "IMAGE_EXTENSIONS",
    "Dataset",
    "DuplicateReport",
    "ImageFolderDataset",
    "KaggleDataset",
    "ListDataset",
    "ManifestDataset",
    "SubsetDataset",
    "SyntheticECGDataset",
    "ValidationReport",
    "dedupe",
    "find_duplicates",
    "validate_dataset",
    "write_synthetic_ecg_dataset",
]
