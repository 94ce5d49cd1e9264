"""One retry policy for everything the bridge retries: the embedded agent's turn, a remote
back end's reconnect, a call event's POST, a Twilio REST request.

A ``RetryPolicy`` says which errors are a failed attempt (``errors``; others propagate),
which of those are worth another try (``retryable``), the pause before each retry
(``pauses_s``: ``len(pauses_s) + 1`` attempts) and each attempt's time limit
(``timeout_s``). It logs every retry (``callbridge.retry``, one WARNING line naming
``what``); callers add their own timeline notes through ``on_failure``.

A request that is simply tried again::

    TWILIO = RetryPolicy("twilio", pauses_s=(0.5,), timeout_s=5.0, errors=(OSError,))
    answer = await TWILIO.run(lambda attempt: request())  # raises GaveUp in the end

A loop that does more between tries (speaks a filler, reconnects) keeps a ``Retries``
(``policy.start()``): ``failed(error)`` counts the failure and says how long to pause
(``Failure.pause_s``; None: give up), ``succeeded()`` starts the schedule afresh (with
``max_failures`` bounding the failures of the whole job). Pure logic: sleeping is the
caller's (``run`` takes ``sleep``, for tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("callbridge.retry")

T = TypeVar("T")


def _always(error: BaseException) -> bool:
    return True


def describe(error: BaseException) -> str:
    """One line for a log or a timeline: the error's type and text (300 characters)."""
    text = " ".join(str(error).split())
    if isinstance(error, TimeoutError) and not text:
        return "timed out"
    return f"{type(error).__name__}: {text}"[:300]


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed attempt: which (1-based), why, and the pause before the next one (None:
    no next one)."""

    attempt: int
    error: BaseException
    pause_s: float | None


class GaveUp(Exception):
    """Every attempt failed, or one failed in a way not worth retrying (``last``)."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        super().__init__(f"{what}: gave up after {attempts} attempt(s): {describe(last)}")
        self.what = what
        self.attempts = attempts
        self.last = last


@dataclass(frozen=True)
class RetryPolicy:
    what: str
    """Names the job in log lines."""
    pauses_s: tuple[float, ...]
    """The pause before each retry."""
    timeout_s: float | None = None
    """Each attempt's time limit (``run``, ``bounded``); None: unbounded."""
    errors: tuple[type[BaseException], ...] = (TimeoutError, OSError)
    """Errors that make an attempt failed; any other propagates at once."""
    retryable: Callable[[BaseException], bool] = _always
    """Whether a failure is worth another attempt (e.g. not a 4xx)."""
    max_failures: int | None = None
    """Failures of the whole job, across ``Retries.succeeded()``, before giving up."""

    @property
    def attempts(self) -> int:
        return len(self.pauses_s) + 1

    def start(self) -> Retries:
        """The count of one job's failures, for a loop that retries by itself."""
        return Retries(self)

    async def bounded(self, attempt: Awaitable[T]) -> T:
        """``attempt`` within ``timeout_s`` (raises ``TimeoutError`` past it)."""
        if self.timeout_s is None:
            return await attempt
        return await asyncio.wait_for(attempt, self.timeout_s)

    async def run(
        self,
        attempt: Callable[[int], Awaitable[T]],
        on_failure: Callable[[Failure], None] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> T:
        """``attempt(n)`` (n from 1), each within ``timeout_s``, until one succeeds;
        ``on_failure`` hears each failure. Raises ``GaveUp`` when no attempt is left."""
        retries = self.start()
        while True:
            try:
                return await self.bounded(attempt(retries.failures + 1))
            except self.errors as exc:
                failure = retries.failed(exc)
            if on_failure is not None:
                on_failure(failure)
            if failure.pause_s is None:
                raise GaveUp(self.what, failure.attempt, failure.error) from failure.error
            await sleep(failure.pause_s)


class Retries:
    """One job's failures under a ``RetryPolicy``."""

    __slots__ = ("failures", "policy", "total")

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        """Since the last success: the schedule's position."""
        self.total = 0
        """In the whole job (``max_failures``)."""

    def succeeded(self) -> None:
        """An attempt worked: the next failure pauses as the first did."""
        self.failures = 0

    def failed(self, error: BaseException, retry: bool = True) -> Failure:
        """Count a failed attempt; ``retry`` False: not worth another (whatever the policy
        says). Logs the retry, if there is one."""
        policy = self.policy
        self.failures += 1
        self.total += 1
        attempt = self.failures
        pause: float | None = None
        if (
            retry
            and attempt <= len(policy.pauses_s)
            and (policy.max_failures is None or self.total <= policy.max_failures)
            and policy.retryable(error)
        ):
            pause = policy.pauses_s[attempt - 1]
            log.warning(
                "%s failed (attempt %d of %d): %s; retrying in %.2g s",
                policy.what,
                attempt,
                policy.attempts,
                describe(error),
                pause,
            )
        return Failure(attempt, error, pause)
