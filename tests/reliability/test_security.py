"""Security: no SQL from hostile names, no secrets in anything written, no patient identifiers.

- Snowflake identifiers with quotes, semicolons, comments, dots or spaces are refused
  before any statement reaches the session (counted on the fake session).
- Secrets planted in the environment (Kaggle key, Snowflake password and token, OpenAI key)
  never appear in any file a run writes (manifest, JSONL, parquet, lock), nor in its
  stdout/stderr, whether the run succeeds, fails per record (HTTP 401) or fails as a whole,
  with `--verbose` logging and `--debug` tracebacks on.
- DICOM patient identifiers (name, id, birth date) never reach the outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_helpers import cli_env, every_file, run_cli, write_config, write_ecg_folder

from medbatch.snowflake import SnowflakeIdentifierError
from medbatch.snowflake.identifiers import StageLocation, validate_identifier, validate_stage_path
from medbatch.testing.openai_server import OpenAITestServer

HOSTILE = [
    'ECG"; DROP TABLE PATIENTS; --',
    "ECG;DROP",
    "ECG -- comment",
    "ECG/*x*/",
    '"ECG"',
    "ECG STAGE",
    "ECG'",
    "",
    "ECG\nDROP",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_identifiers_are_refused(name: str) -> None:
    with pytest.raises(SnowflakeIdentifierError):
        validate_identifier(name, "stage")


@pytest.mark.parametrize("name", [n for n in HOSTILE if n])
def test_hostile_stage_locations_are_refused_before_any_sql(name: str) -> None:
    from medbatch.testing.snowflake import FakeSession

    session = FakeSession()
    with pytest.raises(SnowflakeIdentifierError):
        StageLocation.parse(f"@MEDBATCH_DB.PUBLIC.{name}/ecg")
    with pytest.raises(SnowflakeIdentifierError):
        validate_stage_path(f"@MEDBATCH_DB.{name}.ECG_STAGE")
    assert sum(session.calls.values()) == 0, "nothing reached the session"


SECRETS = {
    "KAGGLE_KEY": "kaggle-4f1d2c-SECRET-9aa7",
    "SNOWFLAKE_PASSWORD": "sf-pass-Zq81-SECRET",
    "SNOWFLAKE_TOKEN": "sf-token-77e0-SECRET-c3",
    "OPENAI_API_KEY": "sk-test-SECRET-5b6c7d8e9f",
}


def _assert_no_secret(texts: dict[str, bytes]) -> None:
    for where, data in texts.items():
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} leaked into {where}"
            # Also the tail alone: a key cut for display ("sk-...9f") still identifies it.
            assert value[-12:].encode() not in data, f"part of {name} leaked into {where}"


def test_planted_secrets_never_appear_in_outputs_logs_or_errors(tmp_path: Path) -> None:
    write_ecg_folder(tmp_path / "images", 12)
    env = cli_env(extra=SECRETS)
    captured: dict[str, bytes] = {}
    runs = {
        "ok": SECRETS["OPENAI_API_KEY"],  # the server accepts our key
        "rejected": "another-key",  # every request gets HTTP 401
    }
    for label, server_key in runs.items():
        with OpenAITestServer(
            lambda body: "FINAL CLASSIFICATION: NORMAL", api_key=server_key, max_lifetime_s=60
        ) as server:
            config = write_config(
                tmp_path / f"{label}.toml",
                root=tmp_path / "images",
                output_dir=tmp_path / f"out-{label}",
                runner={
                    "kind": "openai",
                    "base_url": server.base_url,
                    "model": "medgemma-test",
                    "max_retries": 0,
                },
            )
            result = run_cli("--verbose", "run", config, "--no-progress", env=env)
            captured[f"{label}: stdout"] = result.stdout.encode()
            captured[f"{label}: stderr"] = result.stderr.encode()
            answered = len(server.requests_seen)  # authorised requests only
        stored = (tmp_path / f"out-{label}" / "predictions.jsonl").read_text("utf-8")
        if label == "ok":
            assert answered == 12, "the runner did talk to the server"
        else:
            assert stored.count("401") >= 12, "each record records its HTTP 401"
    assert (
        b"status_error" in captured["rejected: stdout"]
        or b"error" in captured["rejected: stdout"] + captured["rejected: stderr"]
    )

    # A run that fails as a whole, with --debug tracebacks: the server is gone.
    config = write_config(
        tmp_path / "gone.toml",
        root=tmp_path / "images",
        output_dir=tmp_path / "out-gone",
        runner={"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
    )
    for flag in ("--verbose", "--debug"):
        result = run_cli(flag, "run", config, "--no-progress", env=env)
        captured[f"gone {flag}: stdout"] = result.stdout.encode()
        captured[f"gone {flag}: stderr"] = result.stderr.encode()

    # A config that names the key's variable wrongly: the error names the variable only.
    for path in every_file(tmp_path):
        if path.suffix != ".toml":
            captured[str(path)] = path.read_bytes()
    assert any("manifest.json" in where for where in captured)
    assert any("predictions.jsonl" in where for where in captured)
    _assert_no_secret(captured)


def test_dicom_patient_identifiers_never_reach_outputs(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    from medbatch.datasets.dicom import DicomDataset
    from medbatch.pipeline import classify
    from medbatch.tasks.registry import get_task
    from medbatch.testing.function_runner import FunctionRunner

    source = get_testdata_file("CT_small.dcm")
    assert source is not None
    identifiers = {
        "PatientName": "DOE^JANE^SECRETNAME",
        "PatientID": "PID-77441122",
        "PatientBirthDate": "19370214",
        "OtherPatientIDs": "MRN-55667788",
        "AccessionNumber": "ACC-99001122",
        "InstitutionName": "St Secretia Hospital",
        "ReferringPhysicianName": "HOUSE^GREGORY^SECRET",
    }
    folder = tmp_path / "dicom" / "normal_ecg_images"
    folder.mkdir(parents=True)
    for i in range(3):
        ds = pydicom.dcmread(source)
        for keyword, value in identifiers.items():
            setattr(ds, keyword, value)
        ds.save_as(folder / f"scan{i}.dcm")

    task = get_task("ecg")
    dataset = DicomDataset(tmp_path / "dicom", label_map=task.folder_map, labels=task.labels)
    runner = FunctionRunner(keep_requests=True, fn=lambda request: "FINAL CLASSIFICATION: NORMAL")
    result = classify(dataset, task, runner, store=tmp_path / "out", canary=0)
    assert len(result.predictions) == 3

    written = {str(p): p.read_bytes() for p in every_file(tmp_path / "out")}
    written["frame"] = result.predictions.to_json().encode()
    written["requests"] = "".join(
        f"{r.record_id}{[m.text_content for m in r.messages]}" for r in runner.requests_seen
    ).encode()
    written["metadata"] = str(result.predictions["metadata"].tolist()).encode()
    for where, data in written.items():
        for keyword, value in identifiers.items():
            for piece in {value, value.replace("^", " ")}:
                assert piece.encode() not in data, f"{keyword} leaked into {where}"
