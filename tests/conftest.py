"""Test-wide guards: no network beyond loopback, no model hub, no Snowflake account."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# `model = "medbatch/tiny-gemma3"` builds the tiny model into this cache: one per session,
# never in the user's ~/.cache.
os.environ.setdefault("MEDBATCH_CACHE_DIR", tempfile.mkdtemp(prefix="medbatch-test-cache-"))
# Snowflake connections must never be attempted from tests: point every default at nothing.
for _key in list(os.environ):
    if _key.startswith("SNOWFLAKE_"):
        del os.environ[_key]

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6):
        try:
            allowed = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = False
        if not allowed:
            raise OSError(f"tests may not open network connections (tried {host})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Gemma 3 VLM, built once per test session (about 1 MB)."""
    for extra_module in ("torch", "transformers"):
        pytest.importorskip(
            extra_module, reason=f"the tiny VLM needs {extra_module}: pip install 'medbatch[local]'"
        )
    from medbatch.testing.tiny_vlm import tiny_vlm

    return tiny_vlm(tmp_path_factory.getbasetemp() / "tiny-gemma3")
