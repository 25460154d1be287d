"""Keep credentials out of everything medbatch writes or logs.

```
text ──redact──▶ text with *** in place of:
   URL user-info            http://user:PASS@host      → http://***@host
   secret query/form keys   ?key=K&api-version=1      → ?key=***&api-version=1
   auth header values       Bearer sk-…, Basic dXNlcjpQ… → Bearer ***, Basic ***
   secret key/value pairs   'password': 'x', token=x  → 'password': '***', token=***
   known secret values      the API key, a URL's password, secret-named env variables
```

Known values come from `remember_secret` (the pipeline registers the runner's: the key
named by `api_key_env`, the password in `base_url`, secret `extra_query` values) and from
environment variables whose names say they hold a secret (`*_PASSWORD`, `*_TOKEN`,
`*_API_KEY`, `*_SECRET*`, ...). Values shorter than `MIN_SECRET_CHARS` are not matched on
their own (replacing every "abc" would garble the text); the patterns still apply.

Applied where text leaves the process: `RecordError` and `Prediction.error_message` (so the
JSONL, the parquet table and the report), log records (`RedactingFilter`, installed on
medbatch's and httpx's loggers by `classify` and on the CLI's log handler), and the
tracebacks `--debug` prints.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import threading
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "MIN_SECRET_CHARS",
    "REDACTED",
    "RedactingFilter",
    "check_env_var_name",
    "format_exception",
    "install_log_redaction",
    "known_secrets",
    "redact",
    "remember_runner_secrets",
    "remember_secret",
]

REDACTED = "***"
MIN_SECRET_CHARS = 6
"""Shorter known values are not replaced on their own (the patterns still apply)."""

# Query, form and key/value names that carry credentials (compared case-insensitively).
_SECRET_NAMES = (
    r"api[_-]?key|apikey|x-api-key|key|access[_-]?token|refresh[_-]?token|id[_-]?token|"
    r"token|auth|authorization|secret|client[_-]?secret|password|passwd|pwd|passcode|"
    r"private[_-]?key(?:[_-]?file[_-]?pwd)?|sig|signature|subscription[_-]?key|"
    r"ocp-apim-subscription-key|session[_-]?token|sas|code"
)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@?#'\"<>]+@")
_QUERY_SECRET = re.compile(rf"(?i)([?&;](?:{_SECRET_NAMES})=)[^&#\s'\"<>]+")
# Key/value pairs in messages and reprs: names that are rarely prose ("key", "code" are).
_PAIR_NAMES = (
    r"api[_-]?key|apikey|x-api-key|access[_-]?token|refresh[_-]?token|id[_-]?token|token|"
    r"secret|client[_-]?secret|password|passwd|pwd|passcode|private[_-]?key(?:[_-]?file[_-]?pwd)?|"
    r"session[_-]?token|subscription[_-]?key|authorization"
)
_PAIR_SECRET = re.compile(
    rf"""(?ix)
    (["']?\b(?:{_PAIR_NAMES})\b["']?\s*[:=]\s*)   # password= / "token": / 'pwd' :
    (["']?)                                         # an opening quote, kept
    (?!\*\*\*|(?:Bearer|Basic|Token)\s)[^\s"',;&}})\]]+  # the value (not yet redacted)
    """
)
_PAIR_STEMS = ("key", "token", "secret", "pass", "pwd", "authorization")
_BEARER = re.compile(r"(?i)\b(Bearer|Token)\s+[A-Za-z0-9._~+/=-]{8,}")
_BASIC = re.compile(r"(?i)\b(Basic)\s+([A-Za-z0-9+/]{4,}={0,2})")
# Environment variables whose values are secrets, by name.
# Whole words only: TOKENIZERS_PARALLELISM=false is no secret; *_FILE and *_PATH name files.
_SECRET_ENV = re.compile(
    r"(?i)(^|_)(PASSWORD|PASSWD|PWD|PASSCODE|TOKEN|SECRET|API_?KEY|ACCESS_KEY|PRIVATE_KEY|"
    r"CREDENTIALS?|KEY)(_|$)"
)
_NOT_SECRET_ENV = re.compile(r"(?i)_(FILE|PATH|DIR)$")
_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

_remembered: set[str] = set()
_remembered_lock = threading.Lock()


def remember_secret(value: str | None) -> None:
    """Redact `value` (and its `Basic` form when it is `user:password`) from now on."""
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    with _remembered_lock:
        _remembered.add(value)


def known_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """Remembered values plus the values of secret-named environment variables."""
    found = set(_secret_env_values(os.environ) if environ is None else _scan(environ))
    with _remembered_lock:
        found |= _remembered
    return found


def _scan(env: Mapping[str, str]) -> frozenset[str]:
    return frozenset(
        value
        for name, value in env.items()
        if _SECRET_ENV.search(name)
        and not _NOT_SECRET_ENV.search(name)
        and len(value) >= MIN_SECRET_CHARS
    )


_ENV_CACHE_S = 1.0
_env_cache: list[tuple[float, frozenset[str]]] = [(-_ENV_CACHE_S, frozenset())]


def _secret_env_values(env: Mapping[str, str]) -> frozenset[str]:
    # Rescanned at most once a second: reading a store redacts every error line, and a
    # regex per variable per line would cost seconds on 100,000 lines.
    now = time.monotonic()
    stamp, values = _env_cache[0]
    if now - stamp >= _ENV_CACHE_S:
        values = _scan(env)
        _env_cache[0] = (now, values)
    return values


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """`text` with credentials replaced by `***` (see the module docstring for which).

    Args:
        text: Any message, URL, traceback or log line.
        secrets: Values to replace; `known_secrets()` when None.

    Example:
        >>> redact("POST http://me:hunter22@host/v1?key=abc123&api-version=2")
        'POST http://***@host/v1?key=***&api-version=2'
    """
    if not text:
        return text
    values = known_secrets() if secrets is None else set(secrets)
    # Longest first, so a password inside a longer key is not half-replaced.
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= MIN_SECRET_CHARS and value in text:
            text = text.replace(value, REDACTED)
    # Cheap substring tests first: most messages hold none of these, and the regexes cost
    # tens of microseconds each on every error line of a large store.
    lowered = text.lower()
    if "@" in text and "://" in text:
        text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\1{REDACTED}", text)
    if "bearer" in lowered or "token" in lowered:
        text = _BEARER.sub(rf"\1 {REDACTED}", text)
    if "basic" in lowered:
        text = _BASIC.sub(_basic, text)
    if any(stem in lowered for stem in _PAIR_STEMS) and ("=" in text or ":" in text):
        text = _PAIR_SECRET.sub(rf"\1\2{REDACTED}", text)
    return text


def _basic(match: re.Match[str]) -> str:
    """`Basic <base64 of user:password>` only: "Basic rhythm" in prose stays."""
    try:
        decoded = base64.b64decode(match.group(2), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return match.group(0)
    return f"{match.group(1)} {REDACTED}" if ":" in decoded else match.group(0)


def remember_runner_secrets(runner: Any) -> None:
    """Remember the credentials a runner's settings point at or contain.

    Reads `runner.config` (a pydantic model) when there is one: the environment variable
    named by each `*_env` setting, the user-info of URL settings, and the values of
    secret-named keys in mapping settings (`extra_query`, `extra_headers`).
    """
    config = getattr(runner, "config", None)
    dump = getattr(config, "model_dump", None)
    if dump is None:
        return
    settings = dump()
    if not isinstance(settings, dict):
        return
    secret_key = re.compile(rf"(?i)^(?:{_SECRET_NAMES})$")
    for name, value in settings.items():
        if isinstance(value, str) and name.endswith("_env") and _ENV_VAR_NAME.match(value):
            remember_secret(os.environ.get(value))
        elif isinstance(value, str) and "://" in value:
            _remember_userinfo(value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str) and secret_key.match(str(key)):
                    remember_secret(item)


def _remember_userinfo(url: str) -> None:
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return
    if password:
        remember_secret(password)
        remember_secret(unquote(password))
        pair = f"{unquote(user or '')}:{unquote(password)}"
        remember_secret(base64.b64encode(pair.encode()).decode("ascii"))
    elif user:
        remember_secret(user)  # a token given as the user name (https://TOKEN@host)


def check_env_var_name(value: str, setting: str) -> str:
    """`value` if it looks like an environment variable's name, else a `ValueError`.

    The message never repeats the value: it may be a key pasted where its variable's name
    belongs.
    """
    looks_like_key = (
        len(value) >= 20 and "_" not in value and any(c.isdigit() for c in value)
    ) or not _ENV_VAR_NAME.match(value)
    if looks_like_key:
        raise ValueError(
            f"{setting} must be the NAME of an environment variable (letters, digits and "
            f"_, e.g. OPENAI_API_KEY), not the key itself; the value given ({len(value)} "
            "characters) does not look like a variable name. Put the key in that variable"
        )
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the message, its arguments and any traceback.

    The record is changed in place (message formatted once, arguments dropped), so every
    handler after it sees the redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = format_exception(record.exc_info[1]).rstrip("\n")
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()
_LIBRARY_LOGGERS = ("httpx", "httpcore", "urllib3", "snowflake.connector")


def install_log_redaction(handlers: Iterable[logging.Handler] = ()) -> None:
    """Add the redacting filter to medbatch's and httpx's loggers, and to `handlers`.

    A filter on a logger only sees records logged on that very logger, so each medbatch
    module's logger gets it (the ones imported so far), plus httpx's, whose request lines
    carry the URL. Idempotent.
    """
    names = [*_LIBRARY_LOGGERS, "medbatch"]
    names += [
        name
        for name, item in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("medbatch.") and isinstance(item, logging.Logger)
    ]
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for handler in handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def format_exception(exc: BaseException) -> str:
    """The full (chained) traceback of `exc`, redacted: what `--debug` prints."""
    return redact("".join(traceback.format_exception(exc)))
