"""snowflake-ml-python releases for the fake Snowflake: the real signatures and spec classes.

The API facts `medbatch.testing.snowflake` checks calls against: the installed release's
`run_batch` signature and stock chat signature, other releases read from their wheels
(`TESTED_WHEELS`, fetched by `scripts/fetch_sf_wheels.sh`), and the spec classes each
release's own annotations name. Re-exported by `medbatch.testing.snowflake`.

It must not import `medbatch.testing.snowflake` (the fake) or any runner.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medbatch.snowflake.api import ApiVersion, SpecClasses, detect_api
from medbatch.testing._snowflake_wheels import WheelRelease

__all__ = [
    "SPEC_PARAMETERS",
    "TESTED_WHEELS",
    "SnowflakeRelease",
    "annotated_spec_classes",
    "installed_run_batch_signature",
    "load_release_from_wheel",
    "openai_chat_signature",
    "sf127_wheel",
    "sf_wheel",
    "snowflake_release",
]


def openai_chat_signature(with_params: bool = True) -> Any:
    """The real stock OpenAI chat `ModelSignature` of the installed snowflake-ml-python."""
    from snowflake.ml.model import openai_signatures

    table = (
        openai_signatures.OPENAI_CHAT_WITH_PARAMS_SIGNATURE
        if with_params
        else openai_signatures.OPENAI_CHAT_SIGNATURE
    )
    return table["__call__"]


# -- other releases, read from their wheel without installing them -------------------------


def load_release_from_wheel(wheel: str | Path) -> tuple[inspect.Signature, SpecClasses]:
    """The real `run_batch` signature and spec classes of another snowflake-ml-python wheel.

    The signature is parsed with `ast`; the spec classes are those of the public module the
    detected API needs (`SpecClasses.installed(api, import_module=...)`), executed from the
    wheel's own files (see `WheelRelease`), never a hand-written copy.
    """
    release = WheelRelease(wheel)
    signature = release.run_batch_signature()
    return signature, SpecClasses.installed(
        detect_api(signature), import_module=release.import_module
    )


TESTED_WHEELS = ("1.27.0", "1.47.0", "1.54.0", "2.0.0")
"""Releases fetched by `scripts/fetch_sf_wheels.sh` (the installed 2.x is tested too)."""


def sf_wheel(version: str) -> Path | None:
    """The snowflake-ml-python `version` wheel fetched by `scripts/fetch_sf_wheels.sh`.

    Looks in `$MEDBATCH_SF_WHEELS_DIR` (default `.cache/sf`), then the older `.cache/sf127`.
    """
    for directory in (os.environ.get("MEDBATCH_SF_WHEELS_DIR", ".cache/sf"), ".cache/sf127"):
        wheels = sorted(Path(directory).glob(f"snowflake_ml_python-{version}-*.whl"))
        if wheels:
            return wheels[0]
    return None


def sf127_wheel() -> Path | None:
    """The snowflake-ml-python 1.27.0 wheel, if fetched (`sf_wheel("1.27.0")`)."""
    return sf_wheel("1.27.0")


@dataclass(frozen=True)
class SnowflakeRelease:
    """One snowflake-ml-python release: the installed one, or one read from its wheel.

    Attributes:
        name: `"installed"` or the wheel's version.
        signature: Its `ModelVersion.run_batch` signature.
        wheel: The wheel, None for the installed release.
    """

    name: str
    signature: inspect.Signature
    wheel: WheelRelease | None = None

    @property
    def api(self) -> ApiVersion:
        """`1.x` or `2.x`, by `detect_api`."""
        return detect_api(self.signature)

    def import_module(self, name: str) -> types.ModuleType:
        """The release's module `name`."""
        if self.wheel is None:
            return importlib.import_module(name)
        return self.wheel.import_module(name)

    def specs(self) -> SpecClasses:
        """The spec classes medbatch picks for this release (the code under test)."""
        return SpecClasses.installed(self.api, import_module=self.import_module)

    def annotated(self) -> dict[str, type]:
        """The spec classes the release's own `run_batch` annotations name."""
        return annotated_spec_classes(self.signature, self.wheel)

    def fake_options(self) -> dict[str, Any]:
        """`FakeSnowflake` options that make the fake behave as this release."""
        return {"release": self.wheel} if self.wheel is not None else {}


@functools.cache
def snowflake_release(name: str) -> SnowflakeRelease | None:
    """`"installed"` or a version of `TESTED_WHEELS`; None when its wheel is not fetched."""
    if name == "installed":
        return SnowflakeRelease(name, installed_run_batch_signature())
    wheel = sf_wheel(name)
    if wheel is None:
        return None
    release = WheelRelease(wheel)
    return SnowflakeRelease(name, release.run_batch_signature(), release)


def installed_run_batch_signature() -> inspect.Signature:
    """The installed `ModelVersion.run_batch` signature."""
    from snowflake.ml.model import ModelVersion

    return inspect.signature(ModelVersion.run_batch)


SPEC_PARAMETERS = (
    "input_spec",
    "output_spec",
    "job_spec",
    "resources_spec",
    "inference_spec",
    "image_build_spec",
)
"""`run_batch` parameters whose value must be an instance of the annotated spec class."""


def annotated_spec_classes(
    signature: inspect.Signature, release: WheelRelease | None = None
) -> dict[str, type]:
    """`parameter -> class` that `run_batch`'s own annotations name, for the spec arguments.

    Args:
        signature: A `run_batch` signature (installed, or parsed from `release`).
        release: Resolves the text annotations of a signature parsed from a wheel.
    """
    from pydantic import BaseModel

    classes: dict[str, type] = {}
    for name in SPEC_PARAMETERS:
        parameter = signature.parameters.get(name)
        if parameter is None or parameter.annotation is inspect.Parameter.empty:
            continue
        if isinstance(parameter.annotation, str):
            if release is not None:
                classes[name] = release.annotation_class(name)
            continue
        candidates = [parameter.annotation, *typing.get_args(parameter.annotation)]
        for candidate in candidates:
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                classes[name] = candidate
    return classes
