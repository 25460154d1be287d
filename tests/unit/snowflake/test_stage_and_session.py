"""Stage upload round trips, identifier validation, session building, the stage dataset."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("snowflake.snowpark")

from medbatch.datasets.stage import SnowflakeStageDataset
from medbatch.runners.snowflake import SnowflakeBatchRunner
from medbatch.snowflake import SnowflakeConnectionError, SnowflakeIdentifierError
from medbatch.snowflake.identifiers import StageLocation, validate_identifier
from medbatch.snowflake.session import get_session
from medbatch.snowflake.stage import StageUploader
from medbatch.testing.snowflake import FakeSession, FakeSnowflake

FOLDERS = (
    "normal_ecg_images",
    "abnormal_heartbeat_ecg_images",
    "myocardial_infarction_ecg_images",
    "post_mi_history_ecg_images",
)
LABELS = {
    "normal_ecg_images": "NORMAL",
    "abnormal_heartbeat_ecg_images": "ABNORMAL_HEARTBEAT",
    "myocardial_infarction_ecg_images": "MYOCARDIAL_INFARCTION",
    "post_mi_history_ecg_images": "POST_MI",
}


def _tree(root: Path, n: int) -> Path:
    for i in range(n):
        folder = root / FOLDERS[i % 4]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img ({i}).jpg").write_bytes(b"\xff\xd8\xff" + i.to_bytes(4, "big"))
    return root


def test_1000_images_in_4_folders_take_at_most_4_puts_and_rerun_none(tmp_path: Path) -> None:
    session = FakeSession()
    root = _tree(tmp_path / "ecg", 1000)
    uploader = StageUploader(session, StageLocation.parse("@DB.PUBLIC.ECG_STAGE/ecg"), parallel=8)
    uploader.ensure_stage()
    first = uploader.upload_tree(root)
    assert (first.uploaded, first.skipped) == (1000, 0)
    assert session.calls["put"] == first.put_calls <= 4
    assert session.calls["ls"] == 1
    assert session.calls["refresh"] == 1
    assert all(
        kw == {"parallel": 8, "auto_compress": False, "overwrite": False}
        for kw in session.put_kwargs
    )
    assert len(session.stage_files("@DB.PUBLIC.ECG_STAGE/ecg")) == 1000

    second = uploader.upload_tree(root)
    assert (second.uploaded, second.skipped, second.put_calls) == (0, 1000, 0)
    assert session.calls["put"] == first.put_calls
    assert session.calls["ls"] == 2
    assert second.stage_paths == first.stage_paths

    # An edited image gets a new content address: only it is sent again.
    (root / FOLDERS[0] / "img (0).jpg").write_bytes(b"changed")
    third = uploader.upload_tree(root)
    assert (third.uploaded, third.put_calls) == (1, 1)

    dataset = SnowflakeStageDataset(session, "@DB.PUBLIC.ECG_STAGE/ecg", folder_map=LABELS)
    records = list(dataset)
    assert len(records) == 1001
    assert {r.label for r in records} == set(LABELS.values())
    assert records[0].image.stage_path is not None
    assert records[0].image.stage_path.startswith("@DB.PUBLIC.ECG_STAGE/ecg/")


@pytest.mark.parametrize(
    "bad",
    ["X; DROP TABLE Y", 'A"B', "A--B", "A/*x*/", "A B", "", "1ABC", "DB.SCHEMA", "A'B"],
)
def test_injection_style_identifiers_rejected_before_any_sql(bad: str) -> None:
    fake = FakeSnowflake(answer=lambda m, p: "x")
    with pytest.raises(SnowflakeIdentifierError):
        SnowflakeBatchRunner(
            session=fake.session,
            model_version=fake.model_version,
            database=bad,
            model="M",
            version="V",
            compute_pool="POOL",
        )
    with pytest.raises(SnowflakeIdentifierError):
        SnowflakeBatchRunner(
            session=fake.session,
            model_version=fake.model_version,
            database="DB",
            model="M",
            version="V",
            compute_pool=bad,
        )
    assert fake.session.calls["sql"] == 0
    assert fake.session.queries == []


@pytest.mark.parametrize(
    "location", ["@S/x'; DROP TABLE Y", "@S/../other", "@S/a\\b", "@S/a;b", "@S--x/a", "@S/a--b"]
)
def test_bad_stage_locations_rejected(location: str) -> None:
    with pytest.raises(SnowflakeIdentifierError):
        StageLocation.parse(location)


def test_good_names_pass() -> None:
    assert validate_identifier("MEDGEMMA_COMPUTE_POOL") == "MEDGEMMA_COMPUTE_POOL"
    loc = StageLocation.parse("@MEDGEMMA_DEMO.PUBLIC.ECG_STAGE/ecg_data_new_version/")
    assert loc.url == "@MEDGEMMA_DEMO.PUBLIC.ECG_STAGE/ecg_data_new_version/"
    assert loc.quoted() == "'@MEDGEMMA_DEMO.PUBLIC.ECG_STAGE/ecg_data_new_version/'"


class _Builder:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.params: dict[str, Any] = {}

    def configs(self, params: dict[str, Any]) -> _Builder:
        self.params = params
        return self

    def create(self) -> object:
        if self.fail:
            raise RuntimeError(f"250001: could not connect with {self.params}")
        return "session"


def test_secrets_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    env = {
        "SNOWFLAKE_ACCOUNT": "acme",
        "SNOWFLAKE_USER": "ana",
        "SNOWFLAKE_PASSWORD": "hunter2-secret",
        "SNOWFLAKE_TOKEN": "tok-secret",
    }
    caplog.set_level(logging.DEBUG)
    builder = _Builder(fail=False)
    assert get_session(environ=env, builder_factory=lambda: builder) == "session"
    assert builder.params["password"] == "hunter2-secret"  # handed to Snowpark, nowhere else
    with pytest.raises(SnowflakeConnectionError) as info:
        get_session(environ=env, builder_factory=lambda: _Builder(fail=True))
    assert "acme" in caplog.text
    for secret in ("hunter2-secret", "tok-secret"):
        assert secret not in caplog.text
        assert secret not in str(info.value)


def test_no_configuration_says_what_to_set() -> None:
    with pytest.raises(SnowflakeConnectionError, match="SNOWFLAKE_ACCOUNT"):
        get_session(environ={}, active_session=lambda: None)
    assert get_session(environ={}, active_session=lambda: "notebook") == "notebook"
