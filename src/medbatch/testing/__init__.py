"""Test doubles and contract suites shipped with medbatch, for your tasks and back-ends too.

Everything here is deterministic and offline: no model downloads, no network, no accounts.
Heavy pieces (the tiny VLM, the fake Snowflake) import their dependencies lazily.
"""

from medbatch.testing.fake_vllm import FakeVLLM, fake_vllm
from medbatch.testing.function_runner import FunctionRunner
from medbatch.testing.openai_server import OpenAITestServer
from medbatch.testing.tiny_vlm import tiny_vlm

__all__ = ["FakeVLLM", "FunctionRunner", "OpenAITestServer", "fake_vllm", "tiny_vlm"]
