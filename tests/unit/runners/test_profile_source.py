"""`ModelProfile` is the one source of model-family facts: change it, and every runner
sends something different (issue 18 item 4)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import medbatch.profiles as profiles
from medbatch import ListDataset, Record, classify, get_task
from medbatch.batch_jsonl import write_batch_input
from medbatch.profiles import ModelProfile
from medbatch.prompts.chat import ChatPromptTemplate
from medbatch.records import ChatMessage, ImagePart, ImageRef, InferenceRequest, TextPart
from medbatch.runners.openai import OpenAICompatibleRunner
from medbatch.runners.vllm import VLLMRunner
from medbatch.testing.fake_vllm import fake_vllm

PROBE_MODEL = "acme/probe-vlm-7b"


def _completion(text: str = "FINAL CLASSIFICATION: NORMAL") -> dict[str, Any]:
    message = {"role": "assistant", "content": text}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


class _Recorder:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        return httpx.Response(200, json=_completion())


def _openai(recorder: _Recorder, **options: Any) -> OpenAICompatibleRunner:
    return OpenAICompatibleRunner(
        base_url="http://127.0.0.1:8000/v1",
        model=PROBE_MODEL,
        api_key_env=None,
        transport=httpx.MockTransport(recorder),
        **options,
    )


@pytest.fixture
def big_image(tmp_path: Path) -> ImageRef:
    path = tmp_path / "scan.png"
    Image.new("RGB", (300, 150), (120, 30, 30)).save(path)
    return ImageRef.from_path(path)


def _request(image: ImageRef) -> InferenceRequest:
    return InferenceRequest(
        record_id="r1",
        messages=(
            ChatMessage.text("system", "Be brief."),
            ChatMessage(role="user", content=(TextPart(text="Classify."), ImagePart(image=image))),
        ),
    )


def _install(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> ModelProfile:
    profile = ModelProfile(name="probe", patterns=(r"probe-vlm",), **fields)
    monkeypatch.setattr(profiles, "_PROFILES", [profile, *profiles._PROFILES])
    return profile


def _side(data_url: str) -> int:
    payload = base64.b64decode(data_url.split(",", 1)[1])
    with Image.open(io.BytesIO(payload)) as image:
        return int(max(image.size))


def _image_urls(messages: list[dict[str, Any]]) -> list[str]:
    return [
        part["image_url"]["url"]
        for message in messages
        if isinstance(message["content"], list)
        for part in message["content"]
        if part.get("type") == "image_url"
    ]


def _sent_sides(big_image: ImageRef, tmp_path: Path) -> dict[str, int]:
    """The longest image side each runner (and the Batch API export) sends for PROBE_MODEL."""
    request = _request(big_image)
    recorder = _Recorder()
    with _openai(recorder) as runner:
        list(runner.run([request]))
    sides = {"openai": _side(_image_urls(recorder.bodies[0]["messages"])[0])}
    with (
        fake_vllm(lambda conversation, params: "NORMAL") as fake,
        VLLMRunner(model=PROBE_MODEL) as runner,
    ):
        list(runner.run([request]))
    sides["vllm"] = _side(_image_urls(fake.chat_calls[0].conversations[0])[0])
    export = write_batch_input([request], tmp_path / "batch.jsonl", model=PROBE_MODEL)
    (line,) = export.files[0].read_text().splitlines()
    sides["batch_jsonl"] = _side(_image_urls(json.loads(line)["body"]["messages"])[0])
    return sides


@pytest.mark.parametrize("image_size", [64, 40])
def test_the_profile_image_size_is_what_every_runner_sends(
    monkeypatch: pytest.MonkeyPatch, big_image: ImageRef, tmp_path: Path, image_size: int
) -> None:
    _install(monkeypatch, image_size=image_size)
    assert _sent_sides(big_image, tmp_path) == {
        "openai": image_size,
        "vllm": image_size,
        "batch_jsonl": image_size,
    }


def test_without_a_profile_image_size_every_runner_sends_the_image_as_it_is(
    big_image: ImageRef, tmp_path: Path
) -> None:
    assert set(_sent_sides(big_image, tmp_path).values()) == {300}


def test_a_profile_given_to_a_runner_wins_over_the_model_name(big_image: ImageRef) -> None:
    recorder = _Recorder()
    given = ModelProfile(name="given", image_size=32)
    with _openai(recorder, profile=given) as runner:
        assert runner.profile is given
        list(runner.run([_request(big_image)]))
    assert _side(_image_urls(recorder.bodies[0]["messages"])[0]) == 32


@pytest.mark.parametrize(
    ("system_role", "roles"), [("fold", ["user"]), ("native", ["system", "user"])]
)
def test_the_profile_system_role_decides_the_vllm_fold(
    monkeypatch: pytest.MonkeyPatch, big_image: ImageRef, system_role: str, roles: list[str]
) -> None:
    _install(monkeypatch, system_role=system_role)
    with (
        fake_vllm(lambda conversation, params: "NORMAL") as fake,
        VLLMRunner(model=PROBE_MODEL) as runner,
    ):
        list(runner.run([_request(big_image)]))
    conversation = fake.chat_calls[0].conversations[0]
    assert [message["role"] for message in conversation] == roles
    if system_role == "fold":
        assert conversation[0]["content"][0]["text"] == "Be brief.\n\nClassify."


@pytest.mark.parametrize(
    ("system_role", "roles"), [("fold", ["user"]), ("native", ["system", "user"])]
)
def test_the_pipeline_folds_as_the_runners_profile_says(
    big_image: ImageRef, system_role: str, roles: list[str]
) -> None:
    # The model name says nothing: only the profile handed to the runner can ask for a fold.
    recorder = _Recorder()
    profile = ModelProfile(name="given", system_role=system_role)
    task = get_task("ecg")
    dataset = ListDataset([Record(id="r1", image=big_image, label=task.labels.names[0])])
    with _openai(recorder, profile=profile) as runner:
        classify(dataset, task, runner, progress=False, canary=0)
    assert [message["role"] for message in recorder.bodies[0]["messages"]] == roles


def test_the_chat_template_and_vllm_fold_alike(big_image: ImageRef) -> None:
    template = ChatPromptTemplate("Classify.", system="Be brief.", fold_system=True)
    record = Record(id="r1", image=big_image)
    folded_by_template = template.render(record)
    folded_by_profile = profiles.GEMMA3.fold_messages(
        ChatPromptTemplate("Classify.", system="Be brief.").render(record)
    )
    assert folded_by_template == folded_by_profile


def test_model_image_sizes_is_a_deprecated_view_of_the_profiles() -> None:
    import medbatch.images as images

    with pytest.warns(DeprecationWarning, match="ModelProfile.image_size"):
        sizes = images.MODEL_IMAGE_SIZES
    assert sizes["medgemma"] == profiles.GEMMA3.image_size
    assert images.native_size("google/paligemma2-3b-pt-896") == profiles.PALIGEMMA.image_size


def test_transformers_resolves_its_profile_once_at_construction(tmp_path: Path) -> None:
    from medbatch.runners.transformers import TransformersRunner

    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gemma3"}')
    # The pipeline reads `runner.profile` before the runner starts: a local folder's
    # config.json must already count, or the first run and a resumed one would differ.
    assert TransformersRunner(folder).profile is profiles.GEMMA3
    assert TransformersRunner(tmp_path / "elsewhere").profile is profiles.GENERIC
    given = ModelProfile(name="given")
    assert TransformersRunner(folder, profile=given).profile is given
