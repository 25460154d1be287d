"""The snowflake-ml-python releases the Snowflake tests run against.

The installed release (2.x) is imported; the others are read from their wheels
(`scripts/fetch_sf_wheels.sh`, run by `scripts/check`, which also sets
`MEDBATCH_SF_WHEELS_REQUIRED=1` so that a missing wheel fails instead of skipping).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from medbatch.testing.snowflake import TESTED_WHEELS, SnowflakeRelease, snowflake_release

RELEASES = (*TESTED_WHEELS, "installed")
"""Every release argument building is tested against (`pyproject.toml`'s range)."""


def load_release(name: str) -> SnowflakeRelease:
    """The release, or a skip (a failure under scripts/check) when its wheel is absent."""
    release = snowflake_release(name)
    if release is None:
        message = f"snowflake-ml-python {name} not fetched: run scripts/fetch_sf_wheels.sh"
        if os.environ.get("MEDBATCH_SF_WHEELS_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)
    return release


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest) -> SnowflakeRelease:
    """Each tested release in turn."""
    return load_release(str(request.param))


@pytest.fixture
def get_release() -> Callable[[str], SnowflakeRelease]:
    """`get_release("1.54.0")`: one named release."""
    return load_release
