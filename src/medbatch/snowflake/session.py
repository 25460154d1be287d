"""Get a Snowpark `Session`: the caller's, the notebook's, or one built from configuration.

Order of preference:

1. a `snowpark.Session` the caller passes in (always wins);
2. a named connection from `~/.snowflake/connections.toml` (`connection_name`);
3. `SNOWFLAKE_ACCOUNT`, `SNOWFLAKE_USER`, ... environment variables;
4. the active session of a Snowflake notebook (`get_active_session()`).

Credentials are passed to Snowpark and forgotten: nothing here logs them, and
`describe_connection` shows a redacted view for the run manifest.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from medbatch.errors import MissingDependencyError
from medbatch.snowflake import SnowflakeConnectionError

__all__ = ["ENV_KEYS", "SECRET_KEYS", "connection_from_env", "describe_connection", "get_session"]

logger = logging.getLogger(__name__)

ENV_KEYS: dict[str, str] = {
    "SNOWFLAKE_ACCOUNT": "account",
    "SNOWFLAKE_USER": "user",
    "SNOWFLAKE_PASSWORD": "password",
    "SNOWFLAKE_AUTHENTICATOR": "authenticator",
    "SNOWFLAKE_TOKEN": "token",
    "SNOWFLAKE_PRIVATE_KEY_FILE": "private_key_file",
    "SNOWFLAKE_PRIVATE_KEY_FILE_PWD": "private_key_file_pwd",
    "SNOWFLAKE_ROLE": "role",
    "SNOWFLAKE_WAREHOUSE": "warehouse",
    "SNOWFLAKE_DATABASE": "database",
    "SNOWFLAKE_SCHEMA": "schema",
    "SNOWFLAKE_HOST": "host",
}
"""Environment variable → Snowpark connection parameter."""

SECRET_KEYS = frozenset({"password", "token", "private_key_file_pwd", "private_key", "passcode"})
"""Connection parameters that are never logged or stored."""


def connection_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Connection parameters from `SNOWFLAKE_*` variables (empty when none are set)."""
    env = os.environ if environ is None else environ
    return {param: env[key] for key, param in ENV_KEYS.items() if env.get(key)}


def describe_connection(params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `params` safe to log or store: secrets replaced by `***`."""
    return {key: ("***" if key.lower() in SECRET_KEYS else value) for key, value in params.items()}


def _default_builder() -> Any:
    try:
        from snowflake.snowpark import Session
    except ImportError as exc:
        raise MissingDependencyError(
            "SnowflakeBatchRunner", "snowflake-snowpark-python", "snowflake"
        ) from exc
    return Session.builder


def _active_session() -> Any | None:
    try:
        from snowflake.snowpark.context import get_active_session

        return get_active_session()
    except Exception:
        return None


def get_session(
    session: Any | None = None,
    *,
    connection_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    builder_factory: Callable[[], Any] = _default_builder,
    active_session: Callable[[], Any | None] = _active_session,
) -> Any:
    """Return a Snowpark session (see the module docstring for the order).

    Args:
        session: A session to use as is.
        connection_name: A connection in `connections.toml`.
        environ: Environment to read `SNOWFLAKE_*` from (default `os.environ`).
        builder_factory: Returns a `Session.builder` (a seam for tests).
        active_session: Returns the notebook's active session or None (a seam for tests).

    Raises:
        SnowflakeConnectionError: Nothing is configured, or the connection failed. The
            message names what was tried, never a secret.
    """
    if session is not None:
        return session
    params: dict[str, Any] = {}
    if connection_name:
        params["connection_name"] = connection_name
        source = f"connection {connection_name!r} from connections.toml"
    else:
        params = dict(connection_from_env(environ))
        source = "SNOWFLAKE_* environment variables"
        if "account" not in params:
            active = active_session()
            if active is not None:
                return active
            raise SnowflakeConnectionError(
                "no Snowflake session: pass session=, set connection_name to a connection in "
                "~/.snowflake/connections.toml, or set SNOWFLAKE_ACCOUNT and SNOWFLAKE_USER"
            )
    logger.info("opening Snowflake session from %s: %s", source, describe_connection(params))
    try:
        return builder_factory().configs(params).create()
    except MissingDependencyError:
        raise
    except Exception as exc:
        # Connector messages can echo connection details; keep only the exception type in
        # ours and let `from exc` carry the original for debugging.
        raise SnowflakeConnectionError(
            f"could not open a Snowflake session from {source} ({type(exc).__name__}); "
            "check the account, user and authenticator"
        ) from exc
