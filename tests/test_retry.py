"""The one backoff formula (``worker.retry.backoff_s``) used by window retries, LLM and exchange calls,
and what a failed analyse attempt leads to (``worker.runtime.tasks.failed_attempt``)."""

from __future__ import annotations

import random

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from hypothesis import given
from hypothesis import strategies as st

from worker.errors import InvalidModelOutput, LLMTimeout
from worker.retry import backoff_s
from worker.runtime.tasks import failed_attempt, retry_delay
from worker.settings import MAX_RETRY_DELAY_S


@given(
    attempt=st.integers(1, 200),
    base=st.floats(0.001, 1000),
    cap=st.floats(0.001, 10_000),
    seed=st.integers(0, 2**32 - 1),
)
def test_jittered_delay_stays_between_half_and_the_capped_exponential(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    plain = backoff_s(attempt, base_s=base, cap_s=cap)
    jittered = backoff_s(attempt, base_s=base, cap_s=cap, rng=random.Random(seed))
    assert plain == min(cap, base * 2 ** (attempt - 1))
    assert plain / 2 <= jittered <= plain <= cap


def test_plain_delay_doubles_until_the_cap() -> None:
    assert [backoff_s(a, base_s=1.0, cap_s=60.0) for a in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_a_windows_retry_never_waits_longer_than_the_documented_cap() -> None:
    """``retry_delay`` used to multiply the capped delay by U(0.5, 1.5): up to 450 s for a 300 s cap."""
    assert max(retry_delay(30, 5.0) for _ in range(2000)) <= MAX_RETRY_DELAY_S


@pytest.mark.parametrize(
    ("exc", "attempt", "status", "reason", "retries"),
    [
        (LLMTimeout("timed out"), 1, "pending", "attempt 1 failed: timed out", True),
        (LLMTimeout("timed out"), 3, "failed", "gave up after 3 attempts: timed out", False),
        (SoftTimeLimitExceeded(), 2, "pending", "attempt 2 failed: SoftTimeLimitExceeded()", True),
        (InvalidModelOutput("answer is not JSON"), 1, "failed", "answer is not JSON", False),
        (KeyError("x"), 1, "failed", "internal error: KeyError('x')", False),
    ],
)
def test_a_failed_attempt_retries_only_what_is_temporary(exc, attempt, status, reason, retries) -> None:
    out = failed_attempt(exc, attempt, max_attempts=3, base_s=1.0)
    assert (out.status, out.reason, out.delay is not None) == (status, reason, retries)
    if retries:
        assert 0 < out.delay <= MAX_RETRY_DELAY_S
