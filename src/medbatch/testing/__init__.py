"""Test doubles and contract suites shipped with medbatch, for your tasks and back-ends too.

Everything here is deterministic and offline: no model downloads, no network, no accounts.
Heavy pieces (the tiny VLM, the fake Snowflake) import their dependencies lazily, and the
loopback server and fake vLLM modules load on first use (so `python -m
medbatch.testing.openai_server` runs cleanly).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from medbatch.testing.function_runner import FunctionRunner
from medbatch.testing.tiny_vlm import tiny_vlm

if TYPE_CHECKING:
    from medbatch.testing.fake_vllm import FakeVLLM, fake_vllm
    from medbatch.testing.openai_server import OpenAITestServer

__all__ = ["FakeVLLM", "FunctionRunner", "OpenAITestServer", "fake_vllm", "tiny_vlm"]

_LAZY = {
    "FakeVLLM": "medbatch.testing.fake_vllm",
    "fake_vllm": "medbatch.testing.fake_vllm",
    "OpenAITestServer": "medbatch.testing.openai_server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medbatch.testing' has no attribute {name!r}")
