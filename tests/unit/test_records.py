from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from medbatch.errors import ImageLoadError
from medbatch.records import (
    AnswerStatus,
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceResponse,
    LabelConstraint,
    Prediction,
    TextPart,
)


def test_image_ref_needs_exactly_one_location(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ImageRef()
    with pytest.raises(ValidationError, match="exactly one"):
        ImageRef(path=tmp_path / "a.png", url="https://x/a.png")


def test_sha256_of_file_and_bytes_agree(tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n fake"
    path = tmp_path / "a.png"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert ImageRef.from_path(path).sha256 == expected
    assert ImageRef.from_bytes(data).sha256 == expected


def test_image_ref_is_lazy_and_missing_files_fail_on_use(tmp_path: Path) -> None:
    ref = ImageRef.from_path(tmp_path / "missing.jpg")  # constructing reads nothing
    with pytest.raises(ImageLoadError, match=r"missing\.jpg"):
        _ = ref.sha256


def test_remote_refs_are_identified_by_location_not_downloaded() -> None:
    ref = ImageRef.from_stage("@DB.S.STAGE/a/b.jpg")
    assert ref.sha256.startswith("loc:")
    assert ref.sha256 != ImageRef.from_stage("@DB.S.STAGE/a/c.jpg").sha256
    assert ImageRef.from_stage("@s/x.jpg", checksum="abc").sha256 == "abc"
    with pytest.raises(ImageLoadError, match="remote"):
        ref.read_bytes()


@pytest.mark.parametrize(
    ("head", "media_type"),
    [(b"\xff\xd8\xff\xe0", "image/jpeg"), (b"\x89PNG\r\n", "image/png"), (b"xyz", None)],
)
def test_media_type_is_sniffed_from_bytes(head: bytes, media_type: str | None) -> None:
    expected = media_type or "application/octet-stream"
    assert ImageRef.from_bytes(head + b"\x00" * 16).resolved_media_type == expected


def test_chat_message_renders_openai_shape() -> None:
    ref = ImageRef.from_stage("@S/x.jpg")
    message = ChatMessage(role="user", content=(TextPart(text="hi"), ImagePart(image=ref)))
    rendered = message.to_openai(lambda image: image.stage_path)
    assert rendered == {
        "role": "user",
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "@S/x.jpg"}},
        ],
    }


def test_generation_params_default_to_greedy_and_seeded() -> None:
    params = GenerationParams()
    assert params.temperature == 0.0
    assert params.seed == 0
    assert params.fingerprint() == GenerationParams().fingerprint()
    assert params.fingerprint() != GenerationParams(max_tokens=10).fingerprint()


def test_json_constraint_puts_reasoning_before_label() -> None:
    schema = LabelConstraint(labels=("A", "B"), mode="json", reasoning=True).json_schema()
    assert list(schema["properties"]) == ["reasoning", "label"]
    assert schema["properties"]["label"]["enum"] == ["A", "B"]
    assert schema["additionalProperties"] is False


def test_failure_is_a_value() -> None:
    response = InferenceResponse.failure("r1", "request_failed", "HTTP 500")
    assert not response.ok
    assert response.error is not None
    assert response.error.kind == "request_failed"


def test_answer_status_reads_as_its_value_on_every_python() -> None:
    """Python 3.10 has no enum.StrEnum: the stand-in must print, format and compare alike."""
    import json

    from medbatch.records import AnswerStatus

    status = AnswerStatus.PARSED
    assert isinstance(status, str)
    assert str(status) == f"{status}" == f"{status:>6}" == "parsed"
    assert json.dumps({"status": status}) == '{"status": "parsed"}'
    assert status == "parsed"
    assert AnswerStatus("refusal") is AnswerStatus.REFUSAL


def test_image_ref_error_names_the_locations_it_got(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"got path, url\)"):
        ImageRef(path=tmp_path / "a.png", url="https://x/a.png")
    with pytest.raises(ValidationError, match=r"got url, stage_path, data\)"):
        ImageRef(url="https://x/a.png", stage_path="@S/a.png", data=b"x")
    with pytest.raises(ValidationError, match=r"got none\)"):
        ImageRef(media_type="image/png")
    assert ImageRef(data=b"").kind == "bytes"  # empty bytes are still a location


def test_prediction_row_is_flat_with_sorted_json_fields() -> None:
    prediction = Prediction(
        record_id="a/1.jpg",
        image_sha256="0" * 64,
        label="NORMAL",
        status=AnswerStatus.PARSED,
        model_id="m",
        runner="replay",
        prompt_fingerprint="p",
        params_fingerprint="q",
        created_at="2026-12-04T00:00:00+00:00",
        label_scores={"NORMAL": 0.9, "MI": 0.1},
        metadata={"z": [1, 2.5], "a": {"y": None, "x": "é"}},
    )
    row = prediction.to_row()
    assert row["metadata"] == '{"a": {"x": "\\u00e9", "y": null}, "z": [1, 2.5]}'
    assert row["label_scores"] == '{"NORMAL": 0.9, "MI": 0.1}'
    assert row["status"] == "parsed"
    assert row["record_id"] == "a/1.jpg"
    bare = prediction.model_copy(update={"metadata": {}, "label_scores": None}).to_row()
    assert bare["metadata"] is None
    assert bare["label_scores"] is None
