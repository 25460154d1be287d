"""medbatch's vLLM code against the real vLLM wheel's pure-Python modules (no GPU).

`scripts/fetch_vllm_wheel.sh` downloads the wheel (never installed: it pulls CUDA torch) and
the few small packages its modules import into `.cache/vllm`. Importing vLLM patches torch
and the environment, so `vllm_probe.py` runs once, in a subprocess, and these tests read its
JSON. Without the wheel they are skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

import medbatch.testing.fake_vllm as fake_module

ROOT = Path(__file__).resolve().parents[3]
VLLM_DIR = Path(os.environ.get("MEDBATCH_VLLM_DIR", ROOT / ".cache" / "vllm"))
WHEEL = VLLM_DIR / fake_module.VLLM_VERSION
LABELS = ["NORMAL", "POST_MI"]


@pytest.fixture(scope="module")
def probe() -> dict[str, Any]:
    if not (WHEEL / "vllm" / "__init__.py").is_file() or not (VLLM_DIR / "deps").is_dir():
        pytest.skip(
            f"the vLLM {fake_module.VLLM_VERSION} wheel is not unpacked in {VLLM_DIR}: "
            "run scripts/fetch_vllm_wheel.sh"
        )
    if importlib.util.find_spec("torch") is None:
        # The other-Python CI legs install no torch; the unpacked deps are built for the
        # interpreter that fetched them.
        pytest.skip("vLLM's modules import torch: needs the `local` extra")
    path = os.pathsep.join([str(WHEEL), str(VLLM_DIR / "deps"), str(ROOT / "src")])
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("vllm_probe.py"))],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("VLLM_PROBE_RESULT ")]
    assert done.returncode == 0, done.stderr[-3000:]
    assert lines, done.stdout[-3000:]
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("VLLM_PROBE_RESULT "))
    return result


def test_the_fakes_api_facts_are_the_wheels(probe: dict[str, Any]) -> None:
    shipped = json.loads(
        resources.files("medbatch.testing").joinpath("vllm_api.json").read_text(encoding="utf-8")
    )
    assert probe["snapshot"] == shipped, "regenerate: vllm_probe.py --snapshot > vllm_api.json"


def test_the_fake_raises_classes_where_vllm_has_them(probe: dict[str, Any]) -> None:
    tree = probe["snapshot"]["exceptions"]
    for error in fake_module.FAKE_EXCEPTIONS:
        assert tree[error.__name__] == error.__bases__[0].__name__
    # The issue: neither a ValueError nor a RuntimeError, so `except ValueError` missed it.
    assert tree["VLLMValidationError"] == "VLLMClientError"
    assert tree["VLLMError"] == "Exception"


def test_the_runner_builds_vllms_own_sampling_params(probe: dict[str, Any]) -> None:
    runner = probe["runner"]
    assert runner["params_types"] == ["vllm.sampling_params.SamplingParams"]
    choice = runner["choice"]
    assert choice["structured_outputs_type"] == "vllm.sampling_params"
    assert choice["choice"] == LABELS
    assert choice["logprobs"] == 5
    assert choice["max_tokens"] == 16
    assert choice["stop"] == ["\n\n"]
    assert runner["json_schema"]["properties"]["label"]["enum"] == LABELS
    assert runner["json_schema"]["required"] == ["reasoning", "label"]


def test_vllms_own_validation_error_fails_only_its_record(probe: dict[str, Any]) -> None:
    responses = probe["runner"]["responses"]
    assert responses["choice"]["text"] == "POST_MI"
    assert responses["choice"]["label_scores"] == pytest.approx({"NORMAL": 0.3, "POST_MI": 0.7})
    assert responses["free"]["error"] is None
    assert responses["json"]["error"] is None
    error = responses["poison"]["error"]
    assert error["kind"] == "runner_error"
    assert error["message"].startswith("vLLM rejected this record: VLLMValidationError")
    assert error["retryable"] is False
    assert probe["runner"]["chat_calls"] == [4, 2, 2, 1, 1]


@pytest.mark.parametrize("style", ["vllm", "response_format"])
@pytest.mark.parametrize("mode", ["choice", "json"])
def test_vllm_serve_reads_our_bodies_as_constrained(
    probe: dict[str, Any], style: str, mode: str
) -> None:
    parsed = probe["server"][f"{style}/{mode}"]
    assert parsed["extra_fields"] == []  # nothing vLLM would ignore with a warning
    if style == "vllm" and mode == "choice":
        assert parsed["choice"] == LABELS
    else:
        assert parsed["json"]["properties"]["label"]["enum"] == LABELS
    assert parsed["logprobs"] == 5
    assert (parsed["max_tokens"], parsed["seed"], parsed["stop"]) == (32, 3, ["\n\n"])
    assert parsed["image_parts"] == ["text", "image_url"]


def test_score_mode_runs_on_vllms_own_sampling_params(probe: dict[str, Any]) -> None:
    score = probe["score"]
    assert score["params_types"] == ["vllm.sampling_params.SamplingParams"]
    assert score["response"]["text"] in LABELS
    assert sum(score["response"]["label_scores"].values()) == pytest.approx(1.0)
    assert score["logprob_fields"]["fake"] == score["logprob_fields"]["real"]


@pytest.mark.parametrize("k", ["0", "1", "3"])
def test_the_fakes_prompt_logprobs_are_shaped_as_vllms(probe: dict[str, Any], k: str) -> None:
    shape = probe["score"]["shapes"][k]
    # vLLM's own containers, filled with the fake's numbers, equal the fake's: None first,
    # then per token the actual token (first, with its rank) and the top k.
    assert shape["fake"] == shape["real"]
    assert shape["fake"][0] is None
    assert len(shape["fake"]) == shape["tokens"]
    assert all(1 <= size <= int(k) + 1 for size in shape["sizes"][1:])
