"""Each `RunnerCapabilities` field is acted on somewhere, or marked deprecated.

A capability that a runner declares but nothing reads is a promise nobody keeps: the test
reads the source for `<...>.capabilities.<field>` / `capabilities.<field>` loads outside
the runners' own declarations, and the class docstring for the deprecation note.
"""

from __future__ import annotations

import ast
import inspect
import logging
from pathlib import Path

import pytest

from medbatch.image_ref import ImageRef
from medbatch.records import ChatMessage, ImagePart, InferenceRequest, TextPart
from medbatch.runners.base import RunnerCapabilities
from medbatch.testing import FunctionRunner

SRC = Path(__file__).resolve().parents[3] / "src" / "medbatch"


def _capability_reads(source: str) -> set[str]:
    """Fields read as `capabilities.<field>` or `<x>.capabilities.<field>` in `source`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if name == "capabilities":
                found.add(node.attr)
    return found


def _documented(field: str) -> str:
    """The docstring entry of `field` in RunnerCapabilities' Attributes section."""
    # cleandoc: Python 3.13 strips docstring indentation at compile time, older ones do not.
    doc = inspect.cleandoc(RunnerCapabilities.__doc__ or "")
    entry = doc.split(f"\n    {field}: ", 1)[1]
    return entry.split("\n    ", 1)[0]


def test_every_capability_is_read_somewhere_or_deprecated() -> None:
    read: set[str] = set()
    for path in SRC.rglob("*.py"):
        read |= _capability_reads(path.read_text("utf-8"))
    unread = [
        field
        for field in RunnerCapabilities.model_fields
        if field not in read and not _documented(field).startswith("Deprecated")
    ]
    assert unread == [], f"declared but never read (act on them or deprecate): {unread}"
    # The deprecation note is kept true: a deprecated capability is not acted on.
    stale = [
        f
        for f in read
        if f in RunnerCapabilities.model_fields and _documented(f).startswith("Deprecated")
    ]
    assert stale == []


def test_the_reader_finds_both_spellings() -> None:
    source = "def f(runner, capabilities):\n    runner.capabilities.expensive\n    capabilities.x\n"
    assert _capability_reads(source) == {"expensive", "x"}
    # Declaring (a keyword) is not reading.
    assert _capability_reads("RunnerCapabilities(image_inputs=frozenset())\n") == set()


def _request(record_id: str, image: ImageRef) -> InferenceRequest:
    message = ChatMessage(role="user", content=(TextPart(text="Classify."), ImagePart(image=image)))
    return InferenceRequest(record_id=record_id, messages=(message,))


def test_an_image_kind_the_runner_did_not_declare_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = FunctionRunner(
        lambda request: "NORMAL",
        capabilities=RunnerCapabilities(image_inputs=frozenset({"bytes"})),
    )
    requests = [
        _request("local", ImageRef.from_bytes(b"\x89PNG")),
        _request("remote-1", ImageRef.from_url("https://example.org/1.png")),
        _request("remote-2", ImageRef.from_url("https://example.org/2.png")),
        _request("staged", ImageRef.from_stage("@DB.S.ST/a.png")),
    ]
    with caplog.at_level(logging.WARNING, logger="medbatch.runners.base"):
        responses = list(runner.run(requests))
    # Behaviour is unchanged: every record is still answered.
    assert sorted(r.record_id for r in responses) == sorted(r.record_id for r in requests)
    assert all(r.text == "NORMAL" for r in responses)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert "'remote-1' has a url image" in warnings[0]
    assert "'staged' has a stage image" in warnings[1]
    assert all("takes images as bytes" in w for w in warnings)


def test_declared_image_kinds_are_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    runner = FunctionRunner(
        lambda request: "NORMAL",
        capabilities=RunnerCapabilities(image_inputs=frozenset({"bytes", "url", "stage"})),
    )
    requests = [
        _request("local", ImageRef.from_bytes(b"\x89PNG")),
        _request("remote", ImageRef.from_url("https://example.org/1.png")),
        _request("staged", ImageRef.from_stage("@DB.S.ST/a.png")),
    ]
    with caplog.at_level(logging.WARNING, logger="medbatch.runners.base"):
        assert len(list(runner.run(requests))) == 3
    assert caplog.records == []
