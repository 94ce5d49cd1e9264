"""The one retry policy (``callbridge.retry``): schedule, per-attempt limit, which errors
are retried, the budget of a whole job, and the log line of each retry. The sleeps are
recorded instead of slept; the attempts are real coroutines."""

from __future__ import annotations

import asyncio
import logging

import pytest

from callbridge.config import Settings
from callbridge.retry import Failure, GaveUp, RetryPolicy, describe
from callbridge.upstreams.embedded import turn_policy
from callbridge.upstreams.remote import MAX_RECONNECTS, RemoteFailure, RemoteUnrecoverable, reconnect_policy


class Flaky:
    """Fails with ``errors`` in turn, then answers ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.attempts: list[int] = []

    async def __call__(self, attempt: int) -> str:
        self.attempts.append(attempt)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


async def test_retries_after_each_pause_then_answers():
    policy = RetryPolicy("job", pauses_s=(0.5, 1.0))
    attempt, sleeps, failures = Flaky(OSError("down"), TimeoutError()), Sleeps(), []
    assert await policy.run(attempt, failures.append, sleep=sleeps) == "ok"
    assert attempt.attempts == [1, 2, 3]
    assert sleeps == [0.5, 1.0]
    assert [(f.attempt, f.pause_s) for f in failures] == [(1, 0.5), (2, 1.0)]


async def test_gives_up_after_the_last_pause_with_the_last_error():
    policy = RetryPolicy("job", pauses_s=(0.5, 1.0))
    last = OSError("still down")
    attempt, sleeps, failures = Flaky(OSError("a"), OSError("b"), last), Sleeps(), []
    with pytest.raises(GaveUp) as caught:
        await policy.run(attempt, failures.append, sleep=sleeps)
    assert caught.value.attempts == 3 == policy.attempts and caught.value.last is last
    assert sleeps == [0.5, 1.0]
    assert failures[-1] == Failure(3, last, None)


async def test_no_pauses_means_one_attempt():
    with pytest.raises(GaveUp):
        await RetryPolicy("job", pauses_s=()).run(Flaky(OSError()), sleep=Sleeps())


async def test_not_retryable_gives_up_at_once_and_other_errors_propagate():
    policy = RetryPolicy("job", pauses_s=(1.0,), errors=(OSError,), retryable=lambda e: "4xx" not in str(e))
    sleeps = Sleeps()
    with pytest.raises(GaveUp) as caught:
        await policy.run(Flaky(OSError("4xx refused")), sleep=sleeps)
    assert caught.value.attempts == 1 and sleeps == []
    attempt = Flaky(KeyError("a bug"))
    with pytest.raises(KeyError):  # not a failed attempt: a bug, never retried
        await policy.run(attempt, sleep=sleeps)
    assert attempt.attempts == [1]


async def test_each_attempt_within_the_time_limit():
    policy = RetryPolicy("job", pauses_s=(0.0,), timeout_s=0.05)
    calls = []

    async def slow_then_quick(attempt: int) -> str:
        calls.append(attempt)
        await asyncio.sleep(1.0 if attempt == 1 else 0.0)
        return "quick"

    assert await policy.run(slow_then_quick) == "quick"
    assert calls == [1, 2]


def test_a_loop_starts_the_schedule_afresh_after_a_success_within_the_job_budget():
    retries = RetryPolicy("session", pauses_s=(1.0, 2.0), max_failures=3).start()
    assert retries.failed(OSError()).pause_s == 1.0
    assert retries.failed(OSError()).pause_s == 2.0
    retries.succeeded()
    error = OSError("again")
    assert retries.failed(error) == Failure(1, error, 1.0)  # the schedule starts afresh
    retries.succeeded()
    assert retries.failed(OSError()).pause_s is None  # the fourth failure: over the budget
    assert retries.total == 4


def test_a_failure_the_caller_will_not_retry():
    retries = RetryPolicy("turn", pauses_s=(1.0,)).start()
    error = TimeoutError()
    assert retries.failed(error, retry=False) == Failure(1, error, None)


def test_each_retry_is_logged_once_naming_the_job(caplog: pytest.LogCaptureFixture):
    retries = RetryPolicy("posting a call event", pauses_s=(0.5,)).start()
    with caplog.at_level(logging.WARNING, logger="callbridge.retry"):
        retries.failed(OSError("connection refused"))
        retries.failed(OSError("connection refused"))  # the last: no retry to log
    assert [r.getMessage() for r in caplog.records] == [
        "posting a call event failed (attempt 1 of 2): OSError: connection refused; retrying in 0.5 s"
    ]


def test_describe():
    assert describe(TimeoutError()) == "timed out"
    assert describe(ValueError("x" * 1000)) == "ValueError: " + "x" * 288
    assert describe(OSError("HTTP 503\n\n  Service Unavailable")) == "OSError: HTTP 503 Service Unavailable"


def test_the_back_ends_take_their_schedule_from_settings():
    settings = Settings(upstream_retries_s="0.25,3", agent_timeout_s=2.0, upstream_timeout_s=7.0)
    turn = turn_policy(settings)
    assert turn.pauses_s == (0.25, 3.0) and turn.timeout_s == 2.0
    session = reconnect_policy(settings, "vapi")
    assert session.pauses_s == (0.25, 3.0) and session.timeout_s == 7.0
    assert session.max_failures == MAX_RECONNECTS
    assert session.retryable(RemoteFailure("closed")) and not session.retryable(RemoteUnrecoverable("two"))
    assert turn_policy(Settings()).pauses_s == (1.0, 2.0, 4.0)  # the default, as documented
