"""VLLMRunner against the fake vLLM engine: call shapes (vLLM 0.33 API), constraints,
system folding, chunked streaming, per-record failures. The real engine needs a GPU."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import medbatch.testing.fake_vllm as fake_module
from medbatch import ListDataset, Record, classify, get_task
from medbatch.errors import ConfigError, MissingDependencyError, RunnerError
from medbatch.records import (
    ChatMessage,
    GenerationParams,
    ImagePart,
    ImageRef,
    InferenceRequest,
    LabelConstraint,
    TextPart,
)
from medbatch.registry import RUNNERS
from medbatch.runners.vllm import VLLMRunner, VLLMRunnerConfig, fold_system_messages
from medbatch.testing.contracts import RunnerContract, make_request
from medbatch.testing.fake_vllm import FakeVLLM, SamplingParams, StructuredOutputsParams, fake_vllm

LABELS = ("NORMAL", "POST_MI")
MEDGEMMA = "google/medgemma-4b-it"


def _request(record_id: str, *, system: bool = True, **update: Any) -> InferenceRequest:
    request = make_request(record_id)
    messages = request.messages
    if system:
        messages = (ChatMessage.text("system", "You are a cardiologist."), *messages)
    return request.model_copy(update={"messages": messages, **update})


@pytest.fixture
def fake() -> Iterator[FakeVLLM]:
    with fake_vllm(lambda conversation, params: "FINAL CLASSIFICATION: POST_MI") as installed:
        yield installed


def test_engine_is_built_with_the_configured_kwargs(fake: FakeVLLM) -> None:
    with VLLMRunner(model=MEDGEMMA, max_model_len=4096, gpu_memory_utilization=0.8) as runner:
        assert runner.describe()["vllm_version"] == fake_module.VLLM_VERSION
    (kwargs,) = fake.inits
    assert kwargs["model"] == MEDGEMMA
    assert kwargs["dtype"] == "bfloat16"
    assert kwargs["limit_mm_per_prompt"] == {"image": 1}
    assert kwargs["max_model_len"] == 4096
    assert kwargs["gpu_memory_utilization"] == 0.8
    assert kwargs["tensor_parallel_size"] == 1
    assert "allowed_local_media_path" not in kwargs


def test_chat_gets_conversations_and_one_sampling_params_each(fake: FakeVLLM) -> None:
    with VLLMRunner(model="Qwen/Qwen2.5-VL-3B-Instruct") as runner:
        responses = list(runner.run([_request("a"), _request("b")]))
    (call,) = fake.chat_calls
    assert call.kwargs["use_tqdm"] is False
    assert len(call.conversations) == 2
    system, user = call.conversations[0]  # not a Gemma model: the system turn stays
    assert system == {
        "role": "system",
        "content": [{"type": "text", "text": "You are a cardiologist."}],
    }
    assert user["content"][1]["type"] == "image_url"
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    params = call.sampling_params[0]
    assert params.kwargs == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 8, "seed": 0}
    assert {r.record_id for r in responses} == {"a", "b"}
    assert all(r.text == "FINAL CLASSIFICATION: POST_MI" for r in responses)


def test_gemma_gets_the_system_text_folded_into_the_first_user_turn() -> None:
    with fake_vllm(system_role=False) as fake, VLLMRunner(model=MEDGEMMA) as runner:
        (response,) = runner.run([_request("a")])
    assert response.ok
    (conversation,) = fake.chat_calls[0].conversations
    assert [m["role"] for m in conversation] == ["user"]
    assert (
        conversation[0]["content"][0]["text"] == "You are a cardiologist.\n\nClassify this image."
    )


def test_without_folding_a_model_lacking_a_system_role_fails_each_record() -> None:
    with fake_vllm(system_role=False), VLLMRunner(model=MEDGEMMA, fold_system=False) as runner:
        responses = list(runner.run([_request("a"), _request("b")]))
    assert all(r.error is not None and r.error.kind == "runner_error" for r in responses)
    assert "System role not supported" in str(responses[0].error)


def test_fold_system_messages_handles_image_first_and_missing_user() -> None:
    image_first = ChatMessage(
        role="user",
        content=(ImagePart(image=ImageRef.from_url("http://x/1.png")), TextPart(text="Go.")),
    )
    folded = fold_system_messages([ChatMessage.text("system", "Sys."), image_first])
    assert folded[0].content[1] == TextPart(text="Sys.\n\nGo.")
    only_system = fold_system_messages([ChatMessage.text("system", "Sys.")])
    assert [m.role for m in only_system] == ["user"]
    plain = (ChatMessage.text("user", "Hi."),)
    assert fold_system_messages(plain) == plain


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("choice", {"choice": list(LABELS)}),
        ("json", {"json": LabelConstraint(labels=LABELS, mode="json").json_schema()}),
    ],
)
def test_constraints_become_structured_outputs_params(
    fake: FakeVLLM, mode: str, expected: dict[str, Any]
) -> None:
    constraint = LabelConstraint(labels=LABELS, mode=mode)
    with VLLMRunner(model=MEDGEMMA) as runner:
        (response,) = runner.run(
            [_request("a", constraint=constraint, params=GenerationParams(max_tokens=64))]
        )
    structured = fake.chat_calls[0].sampling_params[0].structured_outputs
    assert isinstance(structured, StructuredOutputsParams)
    for key, value in expected.items():
        assert getattr(structured, key) == value
    assert "guided_decoding" not in fake.chat_calls[0].sampling_params[0].kwargs
    assert response.text in (LABELS[1], '{"label": "POST_MI"}')


def test_logprobs_become_label_scores(fake: FakeVLLM) -> None:
    constraint = LabelConstraint(labels=LABELS)
    request = _request("a", constraint=constraint, params=GenerationParams(logprobs=True))
    with VLLMRunner(model=MEDGEMMA) as runner:
        (response,) = runner.run([request])
    assert fake.chat_calls[0].sampling_params[0].logprobs == 5
    assert response.text == "POST_MI"
    assert response.label_scores == pytest.approx({"POST_MI": 0.7, "NORMAL": 0.3})


def test_usage_and_finish_reason_are_mapped(fake: FakeVLLM) -> None:
    request = _request("a", params=GenerationParams(max_tokens=3))
    with VLLMRunner(model=MEDGEMMA) as runner:
        (response,) = runner.run([request])
    assert response.finish_reason == "length"
    assert response.usage is not None
    assert response.usage.completion_tokens == 3
    assert response.usage.prompt_tokens is not None
    assert response.usage.prompt_tokens > 256  # one image = 256 tokens in Gemma 3


def test_chunks_stream_before_the_next_chunk_is_generated(fake: FakeVLLM) -> None:
    with VLLMRunner(model=MEDGEMMA, chunk_size=3) as runner:
        stream = runner.run(_request(f"r{i}") for i in range(7))
        first = next(stream)
        assert len(fake.chat_calls) == 1  # chunk 2 not generated before chunk 1 is read
        rest = list(stream)
    assert [len(call.conversations) for call in fake.chat_calls] == [3, 3, 1]
    assert len({first.record_id, *(r.record_id for r in rest)}) == 7


def test_a_bad_image_fails_alone_and_is_not_sent(fake: FakeVLLM) -> None:
    broken = make_request("broken", image=ImageRef.from_bytes(b"not an image"))
    with VLLMRunner(model=MEDGEMMA) as runner:
        responses = {r.record_id: r for r in runner.run([broken, _request("ok")])}
    assert responses["broken"].error is not None
    assert responses["broken"].error.kind == "image_error"
    assert responses["ok"].ok
    assert len(fake.chat_calls[0].conversations) == 1


def _poison(record_id: str = "poison") -> InferenceRequest:
    return _request(record_id).model_copy(
        update={"messages": (ChatMessage.text("user", "poison prompt"),)}
    )


def _poisoned(conversation: list[dict[str, Any]]) -> bool:
    return any("poison" in str(m["content"]) for m in conversation)


def test_a_rejected_chunk_is_split_until_the_bad_record_is_alone() -> None:
    requests = [_request("a"), _poison(), _request("b")]
    with fake_vllm(fail_on=_poisoned) as fake, VLLMRunner(model=MEDGEMMA) as runner:
        responses = {r.record_id: r for r in runner.run(requests)}
    assert responses["a"].ok
    assert responses["b"].ok
    error = responses["poison"].error
    assert error is not None
    assert error.kind == "runner_error"
    assert "VLLMValidationError" in error.message
    assert not error.retryable  # vLLM refuses the same prompt again
    # [a, poison, b] fails; [a] answers; [poison, b] fails; [poison] fails, [b] answers.
    assert [len(c.conversations) for c in fake.chat_calls] == [3, 1, 2, 1, 1]


def test_one_prompt_over_max_model_len_fails_alone_in_a_chunk_of_256() -> None:
    long = _request("long").model_copy(
        update={"messages": (ChatMessage.text("user", "word " * 5000),)}
    )
    requests = [_request(f"r{i}") for i in range(255)]
    requests.insert(137, long)
    with fake_vllm() as fake, VLLMRunner(model=MEDGEMMA, max_model_len=4096) as runner:
        responses = {r.record_id: r for r in runner.run(requests)}
    assert len(responses) == 256
    failed = {record_id for record_id, r in responses.items() if not r.ok}
    assert failed == {"long"}
    error = responses["long"].error
    assert error is not None
    assert "longer than the maximum model length of 4096" in error.message
    # Halving: ~2 calls per level of a 256-record chunk, not 257 single-record calls.
    assert len(fake.chat_calls) <= 2 * 8 + 1
    answered = sum(
        len(c.conversations) for c in fake.chat_calls if "word word" not in str(c.conversations)
    )
    assert answered == 255  # every good record was generated exactly once


class TemplateError(Exception):
    """Like jinja2's: a chat template's `raise_exception`, neither ValueError nor VLLMError."""


def test_any_exception_from_chat_is_isolated_and_stays_retryable() -> None:
    def odd(conversation: list[dict[str, Any]]) -> bool | BaseException:
        return (
            TemplateError("Conversation roles must alternate") if _poisoned(conversation) else False
        )

    with fake_vllm(fail_on=odd), VLLMRunner(model=MEDGEMMA) as runner:
        responses = {r.record_id: r for r in runner.run([_request("a"), _poison()])}
    assert responses["a"].ok
    error = responses["poison"].error
    assert error is not None
    assert "TemplateError: Conversation roles must alternate" in error.message
    assert error.retryable


def test_a_dead_engine_fails_the_chunk_without_splitting_it() -> None:
    with (
        fake_vllm(fail_on=lambda conversation: fake_module.EngineDeadError()) as fake,
        VLLMRunner(model=MEDGEMMA, chunk_size=4) as runner,
    ):
        responses = list(runner.run(_request(f"r{i}") for i in range(8)))
    assert len(fake.chat_calls) == 2
    assert all(r.error is not None and "engine died" in r.error.message for r in responses)
    assert all(r.error is not None and r.error.retryable for r in responses)


def test_retry_failed_resends_only_the_bad_record(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    image = ImageRef.from_bytes(buffer.getvalue())
    records = [Record(id=f"r{i}", image=image, label="POST_MI") for i in range(6)]

    # The ECG prompt does not name the record: tag r3's conversation so the engine rejects
    # it, until the tag is lifted before the retry.
    with fake_vllm(lambda conversation, params: "FINAL CLASSIFICATION: POST_MI") as fake:
        runner = VLLMRunner(model=MEDGEMMA)
        rejected = {"r3"}
        original = runner._conversation

        def tagged(request: InferenceRequest) -> list[dict[str, Any]]:
            conversation = original(request)
            if request.record_id in rejected:
                conversation[0]["content"].append({"type": "text", "text": "poison"})
            return conversation

        runner._conversation = tagged  # type: ignore[method-assign]
        fake.fail_on = _poisoned
        first = classify(ListDataset(records), get_task("ecg"), runner, store=tmp_path / "run")
        assert (first.predictions["status"] == "error").sum() == 1
        calls_before = len(fake.chat_calls)
        rejected.clear()
        second = classify(
            ListDataset(records),
            get_task("ecg"),
            runner,
            store=tmp_path / "run",
            # vLLM's rejection is a client error, stored as not retryable: only "all" resends it.
            retry_failed="all",
        )
    resent = [len(call.conversations) for call in fake.chat_calls[calls_before:]]
    assert resent == [1]
    assert (second.predictions["status"] != "error").all()
    assert len(second.predictions) == 6


def test_file_transport_sends_file_urls_under_the_allowed_path(tmp_path: Path) -> None:
    image_path = tmp_path / "ecg.png"
    Image.new("RGB", (8, 8)).save(image_path)
    request = make_request("a", image=ImageRef.from_path(image_path))
    with (
        fake_vllm() as fake,
        VLLMRunner(
            model=MEDGEMMA, image_transport="file", allowed_local_media_path=str(tmp_path)
        ) as runner,
    ):
        (response,) = runner.run([request])
    assert response.ok
    assert fake.inits[0]["allowed_local_media_path"] == str(tmp_path.resolve())
    url = fake.chat_calls[0].conversations[0][0]["content"][1]["image_url"]["url"]
    assert url == image_path.resolve().as_uri()


def test_file_transport_needs_an_allowed_path() -> None:
    with pytest.raises(ConfigError, match="allowed_local_media_path"):
        VLLMRunner(model=MEDGEMMA, image_transport="file")


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    runner = VLLMRunner(model=MEDGEMMA)
    with pytest.raises(MissingDependencyError, match=r'pip install "medbatch\[vllm\]"'):
        runner.start()


def test_engine_start_failures_say_what_to_check() -> None:
    with fake_vllm(fail_init=RuntimeError("CUDA out of memory")):
        runner = VLLMRunner(model=MEDGEMMA)
        with pytest.raises(RunnerError, match="gpu_memory_utilization"):
            runner.start()


def test_an_engine_argument_vllm_does_not_know_is_named() -> None:
    with fake_vllm():
        runner = VLLMRunner(model=MEDGEMMA, engine_args={"swap_space": 4})
        with pytest.raises(RunnerError, match=r"refused an engine argument.*swap_space"):
            runner.start()


def test_registry_config_and_classify(fake: FakeVLLM) -> None:
    assert RUNNERS.get("vllm") is VLLMRunner
    config = VLLMRunnerConfig(model=MEDGEMMA, chunk_size=2)
    runner = VLLMRunner.from_config(config)
    assert runner.batch_size == 2
    for name, field in VLLMRunnerConfig.model_fields.items():
        assert field.description, name
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    records = [
        Record(id=f"r{i}", image=ImageRef.from_bytes(buffer.getvalue()), label="POST_MI")
        for i in range(5)
    ]
    result = classify(ListDataset(records), get_task("ecg"), runner, constrained=True)
    assert (result.predictions["label"] == "POST_MI").all()
    assert (result.predictions["method"] == "constrained").all()
    assert result.constraint_ignored == 0


class TestVLLMRunnerContract(RunnerContract):
    @pytest.fixture
    def runner(self) -> Iterator[VLLMRunner]:
        with fake_vllm():
            yield VLLMRunner(model=MEDGEMMA, chunk_size=2)


# -- the fake's own strictness -----------------------------------------------------------


def test_fake_refuses_what_real_vllm_refuses() -> None:
    with pytest.raises(TypeError, match="guided_decoding"):
        SamplingParams(guided_decoding=object())
    with pytest.raises(TypeError, match="best_of"):
        SamplingParams(best_of=2)
    with fake_vllm() as fake, pytest.raises(TypeError, match="swap_space"):
        fake.module.LLM(model=MEDGEMMA, swap_space=4)
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams()
    with pytest.raises(ValueError, match="exactly one"):
        StructuredOutputsParams(choice=["A"], regex="A")
    with fake_vllm() as fake:
        llm = fake.module.LLM(model=MEDGEMMA)
        with pytest.raises(TypeError):
            llm.chat([[{"role": "user", "content": "x"}]], sampling_params=None, guided_options=1)
        with pytest.raises(ValueError, match="allowed-local-media-path"):
            llm.chat(
                [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "file:///x.png"}}],
                    }
                ]
            )
        with pytest.raises(TypeError, match="unexpected keyword"):
            fake.module.LLM(model=MEDGEMMA, guided_decoding_backend="xgrammar")


# -- the fake against the real vLLM, where it is installed -------------------------------


def _parameters(callable_: Any) -> set[str]:
    return set(inspect.signature(callable_).parameters) - {"self", "args", "kwargs"}


def test_fake_matches_the_installed_vllm_api() -> None:
    vllm = pytest.importorskip("vllm")
    from vllm.sampling_params import SamplingParams as RealSamplingParams
    from vllm.sampling_params import StructuredOutputsParams as RealStructured

    real_fields = set(getattr(RealSamplingParams, "__struct_fields__", ())) or _parameters(
        RealSamplingParams
    )
    assert real_fields >= fake_module.SAMPLING_PARAMS_KEYWORDS - {"repetition_detection"}
    assert {f.name for f in dataclasses.fields(RealStructured)} >= set(
        _parameters(StructuredOutputsParams)
    )
    assert _parameters(vllm.LLM.chat) >= fake_module.CHAT_KEYWORDS | {"messages"}
    runner = VLLMRunner(model=MEDGEMMA, max_model_len=4096)
    engine_args = {f.name for f in dataclasses.fields(vllm.EngineArgs)}
    assert set(runner.engine_kwargs()) <= engine_args | _parameters(vllm.LLM.__init__)


def test_the_fakes_exceptions_follow_vllms_tree() -> None:
    tree = json.loads(
        resources.files("medbatch.testing").joinpath("vllm_api.json").read_text(encoding="utf-8")
    )["exceptions"]
    for error in fake_module.FAKE_EXCEPTIONS:
        assert tree[error.__name__] == error.__bases__[0].__name__
    assert not issubclass(fake_module.VLLMValidationError, ValueError | RuntimeError)
    assert "swap_space" not in fake_module.LLM_INIT_KEYWORDS
    assert {"priority", "tokenization_kwargs"} <= fake_module.CHAT_KEYWORDS
