"""How `OpenAICompatibleRunner` decides to send a request again (private to the runners).

One attempt ends in a `RetryableError` (may pass if sent again now), a `FatalError` (the
server refused it) or a `ServerDownError` (not sent: `ConnectionBreaker` saw the server
stop answering). `BackoffHonouringRetryAfter` is tenacity's exponential backoff unless the
server said how long to wait.

It must not import the runner, httpx or the event loop: it is the retry policy only.
"""

from __future__ import annotations

import logging

from tenacity import RetryCallState
from tenacity.wait import wait_base

__all__ = [
    "BackoffHonouringRetryAfter",
    "ConnectionBreaker",
    "FatalError",
    "RetryableError",
    "ServerDownError",
    "log_retry",
]

logger = logging.getLogger("medbatch.runners.openai")


class RetryableError(Exception):
    """One attempt failed in a way that may succeed later."""

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class FatalError(Exception):
    """The server refused the request; sending it again will not help."""

    def __init__(self, reason: str, *, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class ServerDownError(Exception):
    """The server stopped answering (see `ConnectionBreaker`): the record is not sent."""


class ConnectionBreaker:
    """Counts attempts in a row that got no HTTP answer; at `limit` the server is down.

    Only the runner's event loop touches it, so it needs no lock. Any HTTP answer (even a
    429 or a 500: the server is alive) resets the count.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures = 0
        self.open = False

    def reset(self) -> None:
        self.failures = 0
        self.open = False

    def answered(self) -> None:
        self.failures = 0

    def failed(self) -> bool:
        """Count one more failure; True when this one opens the breaker."""
        self.failures += 1
        if self.limit and not self.open and self.failures >= self.limit:
            self.open = True
            return True
        return False


class BackoffHonouringRetryAfter(wait_base):
    """Exponential backoff with jitter, unless the server said how long (`Retry-After`)."""

    def __init__(self, fallback: wait_base, cap_s: float) -> None:
        self.fallback = fallback
        self.cap_s = cap_s

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, RetryableError) and error.retry_after is not None:
            return max(0.0, min(error.retry_after, self.cap_s))
        return float(self.fallback(retry_state))


def log_retry(record_id: str, state: RetryCallState, max_attempts: int) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    logger.info(
        "record %s: %s; retrying in %.2f s (attempt %d of %d)",
        record_id,
        error,
        wait,
        state.attempt_number + 1,
        max_attempts,
    )
