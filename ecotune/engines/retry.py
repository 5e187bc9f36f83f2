"""The one retry policy of every engine request, and how a failed attempt is classified.

An attempt ends in one of three ways besides an answer, and the class decides both whether
it is retried and what the token ledger does with its hold (see :mod:`ecotune.ledger`):

* :class:`Refused`: the server said no before doing any work (429, 503, another 4xx, or
  the connection could not even be opened). Nothing was billed: the hold is released.
  Retried when ``retryable`` (429, 503, 408, 425, connect errors).
* :class:`OutcomeUnknown`: the request went out and no usable answer came back (a
  timeout, a dropped connection, a 500/502/504, a 200 that cannot be read). The engine may
  have billed it: the hold is kept at its worst case. Retried as a new request, which the
  ledger must authorize again.
* anything else: kept at its worst case, not retried.

Retries follow `tenacity`_: at most ``max_retries`` after the first attempt, waiting the
server's ``Retry-After`` (capped) when it sent one, else exponential backoff with full
jitter. A 200 that carried ``usage`` is never retried (its tokens are charged; a malformed
completion marks the instance failed).

.. _tenacity: https://tenacity.readthedocs.io
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from ecotune.engines.base import EngineError

T = TypeVar("T")


class Refused(EngineError):
    """The server refused the request before generating anything (nothing billed)."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class OutcomeUnknown(EngineError):
    """The request may have been served and billed, but no usable answer arrived."""

    retryable = True
    retry_after: float | None = None


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form); None if absent or a date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, (Refused, OutcomeUnknown)) and bool(exc.retryable)


class _RetryAfterOrJitter:
    """tenacity wait: the server's ``Retry-After`` when given, else full-jitter backoff."""

    def __init__(self, base_s: float, max_s: float):
        self.max_s = max_s
        self.jitter = wait_random_exponential(multiplier=base_s, max=max_s)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            return min(self.max_s, float(after))
        return self.jitter(state)


def retrying(max_retries: int, base_s: float, max_s: float) -> AsyncRetrying:
    """An ``async for attempt in retrying(...)`` loop; the last error is re-raised."""
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    return AsyncRetrying(
        stop=stop_after_attempt(max_retries + 1),
        wait=_RetryAfterOrJitter(base_s, max_s),
        retry=retry_if_exception(_retryable),
        reraise=True,
    )


async def with_retries(attempt: Callable[[int], Awaitable[T]], what: str, max_retries: int,
                       base_s: float, max_s: float) -> T:
    """``await attempt(1)``, then ``attempt(2)``, ... under the policy; when a refusal or an
    unknown outcome is the last word, an :class:`EngineError` names ``what``, the attempts
    and why. Other errors (a retry over the token limit, say) pass through as they are."""
    n = 0
    try:
        async for state in retrying(max_retries, base_s, max_s):
            with state:
                n += 1
                return await attempt(n)
    except (Refused, OutcomeUnknown) as e:
        raise EngineError(f"{what} failed after {n} attempt{'s' if n != 1 else ''}; "
                          f"last: {e}") from e
    raise AssertionError("unreachable: tenacity either returns or re-raises")
