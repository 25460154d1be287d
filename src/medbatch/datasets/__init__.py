"""Where records come from: folders, manifests, Kaggle, DICOM, Snowflake stages, synthetic ECGs."""

from medbatch.datasets.base import Dataset, ListDataset, SubsetDataset
from medbatch.datasets.folder import IMAGE_EXTENSIONS, ImageFolderDataset

__all__ = ["IMAGE_EXTENSIONS", "Dataset", "ImageFolderDataset", "ListDataset", "SubsetDataset"]
