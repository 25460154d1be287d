"""One convention for runner settings (issue 18 item 5): the pydantic `<Runner>Config` is
the only list of settings, and every runner is `Runner(config=None, /, **overrides)`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from medbatch.errors import ConfigError
from medbatch.runners.base import BatchRunner, RunnerConfig
from medbatch.runners.openai import OpenAICompatibleRunner, OpenAICompatibleRunnerConfig
from medbatch.runners.replay import ReplayRunner, ReplayRunnerConfig
from medbatch.runners.snowflake import SnowflakeBatchRunner, SnowflakeBatchRunnerConfig
from medbatch.runners.transformers import TransformersRunner, TransformersRunnerConfig
from medbatch.runners.vllm import VLLMRunner, VLLMRunnerConfig

# Each runner with the least settings it needs, and one optional field with another value.
CASES: list[tuple[type[BatchRunner], dict[str, Any], tuple[str, Any]]] = [
    (
        OpenAICompatibleRunner,
        {"base_url": "http://127.0.0.1:8000/v1", "model": "m"},
        ("concurrency", 3),
    ),
    (VLLMRunner, {"model": "google/medgemma-4b-it"}, ("max_model_len", 1024)),
    (
        SnowflakeBatchRunner,
        {"database": "DB", "model": "M", "version": "V1", "compute_pool": "POOL"},
        ("replicas", 2),
    ),
    (TransformersRunner, {"model": "google/medgemma-4b-it"}, ("batch_size", 3)),
]
IDS = [runner.__name__ for runner, _, _ in CASES]


@pytest.mark.parametrize(("runner_cls", "required", "optional"), CASES, ids=IDS)
def test_config_overrides_and_from_config_agree(
    runner_cls: type[Any], required: dict[str, Any], optional: tuple[str, Any]
) -> None:
    key, value = optional
    config_cls = runner_cls.config_class
    config = config_cls(**required, **{key: value})
    by_keywords = runner_cls(**required, **{key: value})
    by_config = runner_cls(config)
    by_both = runner_cls(config_cls(**required), **{key: value})
    assert by_keywords.config == by_config.config == by_both.config == config
    assert getattr(runner_cls.from_config(config).config, key) == value
    assert by_config.config is config  # no overrides: the caller's settings object is kept


@pytest.mark.parametrize(("runner_cls", "required", "optional"), CASES, ids=IDS)
def test_an_unknown_setting_is_one_line_with_a_did_you_mean(
    runner_cls: type[Any], required: dict[str, Any], optional: tuple[str, Any]
) -> None:
    key, value = optional
    typo = key[:-1] + key[-1].upper() + "x"
    with pytest.raises(ConfigError) as caught:
        runner_cls(**required, **{typo: value})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{runner_cls.__name__}: unknown key {typo!r}")
    assert f"did you mean {key!r}?" in message


@pytest.mark.parametrize(("runner_cls", "required", "optional"), CASES, ids=IDS)
def test_a_bad_value_names_the_setting(
    runner_cls: type[Any], required: dict[str, Any], optional: tuple[str, Any]
) -> None:
    key, _ = optional
    with pytest.raises(ConfigError, match=f"{runner_cls.__name__}: {key}: "):
        runner_cls(**required, **{key: "many"})


@pytest.mark.parametrize(("runner_cls", "required", "optional"), CASES, ids=IDS)
def test_the_config_is_the_only_list_of_settings(
    runner_cls: type[Any], required: dict[str, Any], optional: tuple[str, Any]
) -> None:
    parameters = inspect.signature(runner_cls.__init__).parameters
    config_fields = set(runner_cls.config_class.model_fields)
    assert not config_fields & set(parameters)  # no setting repeated in the signature
    first = list(parameters.values())[1]
    assert (first.name, first.kind) == ("config", inspect.Parameter.POSITIONAL_ONLY)
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert "from_config" not in vars(runner_cls)  # the base class builds every runner


def test_a_config_of_another_runner_is_refused() -> None:
    vllm_config = VLLMRunnerConfig(model="m")
    with pytest.raises(ConfigError, match="OpenAICompatibleRunner needs a "):
        OpenAICompatibleRunner(vllm_config)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="TransformersRunner needs a TransformersRunnerConfig"):
        TransformersRunner.from_config(vllm_config)


def test_transformers_shorthand_takes_the_model(tmp_path: Path) -> None:
    assert TransformersRunner("google/medgemma-4b-it").config == TransformersRunnerConfig(
        model="google/medgemma-4b-it"
    )
    by_path = TransformersRunner(tmp_path, revision="abc", device="cpu")
    assert by_path.config.model == str(tmp_path)
    assert by_path.model_id == f"{tmp_path}@abc"
    assert TransformersRunner(model=tmp_path).config.model == str(tmp_path)


def test_configs_stay_the_runner_settings_classes() -> None:
    pairs = [(runner, runner.config_class) for runner, _, _ in CASES]
    assert pairs == [
        (OpenAICompatibleRunner, OpenAICompatibleRunnerConfig),
        (VLLMRunner, VLLMRunnerConfig),
        (SnowflakeBatchRunner, SnowflakeBatchRunnerConfig),
        (TransformersRunner, TransformersRunnerConfig),
    ]
    assert all(config is not None and issubclass(config, RunnerConfig) for _, config in pairs)


def test_replay_takes_its_config_or_recordings(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"record_id": "a", "text": "NORMAL"}\n')
    config = ReplayRunnerConfig(path=path, model_id="recorded")
    assert ReplayRunner(config).model_id == "recorded"
    assert ReplayRunner(config, model_id="other").model_id == "other"
    assert ReplayRunner.from_config(config).source == str(path)
    assert ReplayRunner({"a": "NORMAL"}).model_id == "replay"


def test_ray_uses_the_shared_settings_convention(tmp_path: Path) -> None:
    from medbatch.runners.ray import RayRunner, RayRunnerConfig

    recorded = tmp_path / "answers.jsonl"
    recorded.write_text("")
    inner = {"kind": "replay", "path": str(recorded)}
    config = RayRunnerConfig(inner=inner, num_actors=3)
    assert RayRunner(config).config is config  # no overrides: the caller's object is kept
    by_both = RayRunner(RayRunnerConfig(inner=inner), num_actors=3)
    assert by_both.config == RayRunner(inner=inner, num_actors=3).config == config
    assert RayRunner.from_config(config).config == config
    assert "from_config" not in vars(RayRunner)
    with pytest.raises(ConfigError) as caught:
        RayRunner(inner=inner, num_actor=3)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("RayRunner: unknown key 'num_actor'")
    assert "did you mean 'num_actors'?" in message
    with pytest.raises(ConfigError, match="RayRunner needs a RayRunnerConfig"):
        RayRunner.from_config(VLLMRunnerConfig(model="m"))
    # The inner runner's settings get the same one-line did-you-mean.
    with pytest.raises(
        ConfigError, match=r"\[runner.inner\] replay: .*unknown key 'pth' \(did you mean 'path'\?\)"
    ):
        RayRunner(inner={"kind": "replay", "pth": str(recorded)})
