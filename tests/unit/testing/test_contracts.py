"""The contract suites: every runner and dataset kind has one, and each suite can fail.

Runners and datasets with their own test modules subclass the contracts there
(`test_runner_base.py`, `runners/test_*.py`, `test_folder_dataset.py`); the rest are here.
"""

from __future__ import annotations

import ast
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medbatch.datasets.base import Dataset, ListDataset, SubsetDataset
from medbatch.datasets.kaggle import KaggleDataset
from medbatch.datasets.manifest import ManifestDataset
from medbatch.datasets.synthetic import SyntheticECGDataset, write_synthetic_ecg_dataset
from medbatch.labels import LabelSet
from medbatch.records import ImageRef, InferenceRequest, InferenceResponse, Record
from medbatch.registry import DATASETS, RUNNERS
from medbatch.runners.base import BatchRunner
from medbatch.testing import FunctionRunner
from medbatch.testing.consistency import RecordingRunner
from medbatch.testing.contracts import DatasetContract, RunnerContract

TESTS = Path(__file__).resolve().parents[2]
LABELS = LabelSet.from_names(["NORMAL", "POST_MI"])


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (seed * 30 % 256, 60, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- every kind has a contract -------------------------------------------------------------


def _contract_subjects(contract: str) -> set[str]:
    """Names used in the fixtures of every `class X(<contract>)` under tests/."""
    names: set[str] = set()
    for path in TESTS.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id == contract for base in node.bases
            ):
                names |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    return names


@pytest.mark.parametrize(
    ("registry", "contract"), [(RUNNERS, "RunnerContract"), (DATASETS, "DatasetContract")]
)
def test_every_registered_kind_has_a_contract_suite(registry: Any, contract: str) -> None:
    classes = {registry.get(name).__name__ for name in registry.names()}
    missing = classes - _contract_subjects(contract)
    assert not missing, f"no {contract} subclass builds {sorted(missing)}"


# -- the runner contract can fail for a runner that inherits run() -------------------------


class _DropsOne(FunctionRunner):
    """Loses the last answer of each batch; `run()` would cover it with missing_response."""

    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        return list(super()._run_batch(requests))[:-1]


class _AnswersTwice(FunctionRunner):
    def _run_batch(self, requests: Sequence[InferenceRequest]) -> Iterable[InferenceResponse]:
        answers = list(super()._run_batch(requests))
        return [*answers, answers[0]]


@pytest.mark.parametrize("broken", [_DropsOne, _AnswersTwice])
def test_runner_contract_catches_a_back_end_that_run_repairs(
    broken: type[FunctionRunner], caplog: pytest.LogCaptureFixture
) -> None:
    suite = RunnerContract()
    runner = broken(lambda request: "NORMAL")
    # The promises run() enforces hold even for this broken back-end ...
    suite.test_every_request_answered_exactly_once(runner)
    suite.test_empty_input_gives_no_responses(runner)
    # ... but the back-end's own contract does not.
    with pytest.raises(AssertionError):
        suite.test_back_end_answers_each_request_of_a_batch_once(runner)
    with pytest.raises(AssertionError):
        suite.test_run_needs_no_repair(runner, caplog)


def test_dataset_contract_catches_an_unstable_fingerprint() -> None:
    class Drifting(ListDataset):
        calls = 0

        def fingerprint(self) -> str:
            Drifting.calls += 1
            return str(Drifting.calls)

    records = [Record(id="a", image=ImageRef.from_bytes(_png(1)), label="NORMAL")]
    with pytest.raises(AssertionError):
        DatasetContract().test_fingerprint_is_stable_and_follows_the_records(
            Drifting(records, labels=LABELS)
        )


# -- runners without a test module of their own --------------------------------------------


class TestRecordingRunnerContract(RunnerContract):
    decodes_images = False

    @pytest.fixture
    def runner(self) -> BatchRunner:
        return RecordingRunner(FunctionRunner(lambda request: "NORMAL", batch_size=2))


class TestSnowflakeBatchRunnerContract(RunnerContract):
    # Images are decoded inside the Snowflake job, not by the runner: a broken one fails
    # there, like any answer.
    decodes_images = False

    @pytest.fixture
    def runner(self) -> BatchRunner:
        pytest.importorskip("snowflake.ml.model", reason="the snowflake extra is not installed")
        from medbatch.runners.snowflake import SnowflakeBatchRunner
        from medbatch.testing.snowflake import FakeSnowflake

        fake = FakeSnowflake(answer=lambda messages, params: "FINAL CLASSIFICATION: NORMAL")
        return SnowflakeBatchRunner(
            session=fake.session,
            model_version=fake.model_version,
            job_getter=fake.get_job,
            specs=fake.model_version.specs,
            sleep=lambda seconds: None,
            database="DB",
            model="MEDGEMMA",
            version="V1",
            compute_pool="POOL",
            progress=False,
            poll_interval_s=1.0,
        )


# -- datasets without a test module of their own --------------------------------------------


def _records(n: int = 6) -> list[Record]:
    return [
        Record(id=f"r{i}", image=ImageRef.from_bytes(_png(i)), label=LABELS.names[i % 2])
        for i in range(n)
    ]


class TestListDatasetContract(DatasetContract):
    @pytest.fixture
    def dataset(self) -> Dataset:
        return ListDataset(_records(), labels=LABELS)


class TestSubsetDatasetContract(DatasetContract):
    @pytest.fixture
    def dataset(self) -> Dataset:
        return SubsetDataset(ListDataset(_records(8), labels=LABELS), 5)


class TestSyntheticECGDatasetContract(DatasetContract):
    @pytest.fixture
    def dataset(self) -> Dataset:
        return SyntheticECGDataset(8, seed=2, size=(300, 214))


@pytest.fixture(scope="module")
def synthetic_download(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_ecg_dataset(
        tmp_path_factory.mktemp("contract") / "download", 8, seed=3, size=(300, 214)
    )


class TestKaggleDatasetContract(DatasetContract):
    @pytest.fixture
    def dataset(self, synthetic_download: Path) -> Dataset:
        return KaggleDataset(path=synthetic_download)


class TestManifestDatasetContract(DatasetContract):
    @pytest.fixture
    def dataset(self, tmp_path: Path) -> Dataset:
        root = write_synthetic_ecg_dataset(tmp_path / "flat", 8, layout="flat", size=(300, 214))
        return ManifestDataset(root / "manifest.csv")


class TestDicomDatasetContract(DatasetContract):
    @pytest.fixture
    def dataset(self, tmp_path: Path) -> Dataset:
        pytest.importorskip("pydicom", reason="the dicom extra is not installed")
        import numpy as np
        from pydicom.dataset import Dataset as DicomFile
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

        from medbatch.datasets.dicom import DicomDataset

        for label, folder in (("NORMAL", "normal"), ("POST_MI", "post_mi")):
            for i in range(2):
                ds = DicomFile()
                ds.file_meta = FileMetaDataset()
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds.file_meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.7")
                ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
                ds.Modality = "CR"
                ds.Rows, ds.Columns = 32, 48
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.BitsAllocated = ds.BitsStored = 16
                ds.HighBit = 15
                ds.PixelRepresentation = 0
                pixels = np.full((32, 48), 100 * (i + 1) + len(label), dtype=np.uint16)
                ds.PixelData = pixels.tobytes()
                (tmp_path / folder).mkdir(exist_ok=True)
                ds.save_as(tmp_path / folder / f"{i}.dcm", enforce_file_format=True)
        return DicomDataset(
            tmp_path, label_map={"normal": "NORMAL", "post_mi": "POST_MI"}, labels=LABELS
        )


class TestSnowflakeStageDatasetContract(DatasetContract):
    @pytest.fixture
    def dataset(self, tmp_path: Path) -> Dataset:
        pytest.importorskip("snowflake.snowpark", reason="the snowflake extra is not installed")
        from medbatch.datasets.stage import SnowflakeStageDataset
        from medbatch.snowflake.identifiers import StageLocation
        from medbatch.snowflake.stage import StageUploader
        from medbatch.testing.snowflake import FakeSession

        for i in range(6):
            folder = tmp_path / ("normal" if i % 2 else "post_mi")
            folder.mkdir(exist_ok=True)
            (folder / f"img{i}.png").write_bytes(_png(i))
        session = FakeSession()
        uploader = StageUploader(session, StageLocation.parse("@DB.PUBLIC.ECG_STAGE/ecg"))
        uploader.ensure_stage()
        uploader.upload_tree(tmp_path)
        return SnowflakeStageDataset(
            session,
            "@DB.PUBLIC.ECG_STAGE/ecg",
            folder_map={"normal": "NORMAL", "post_mi": "POST_MI"},
            labels=LABELS,
        )
